// The TON emulator (@ton/sandbox: the real TVM and the standard jetton minter and wallet contracts) behind a small
// HTTP API shaped like toncenter's v2 (`/api/v2/...`), so the coordinator's TON adapter runs unchanged against it.
// Test-only control routes under `/sandbox/...` deploy wallets and the jetton. Prints `{"port": N}` once listening;
// exits when its stdin closes, so it never outlives the test that started it.
import http from 'node:http';
import { createRequire } from 'node:module';
import { Address, Cell, beginCell, loadMessage, toNano } from '@ton/core';
import { Blockchain, internal } from '@ton/sandbox';
import { WalletContractV4 } from '@ton/ton';

const require = createRequire(import.meta.url);
const { JettonMinter } = require('@ton-community/assets-sdk/dist/jetton/JettonMinter.js');
const { JettonWallet } = require('@ton-community/assets-sdk/dist/jetton/JettonWallet.js');

const MAX_BODY_BYTES = 1 << 20;
const MAX_TRANSACTIONS_PER_PAGE = 100;

const blockchain = await Blockchain.create();
const admin = await blockchain.treasury('jetton admin');
/** Every transaction of every account, oldest first, keyed by the raw address. */
const history = new Map();
let consensusBlock = 1;

function record(result) {
    for (const tx of result.transactions) {
        const address = new Address(0, Buffer.from(tx.address.toString(16).padStart(64, '0'), 'hex')).toRawString();
        if (!history.has(address)) history.set(address, []);
        history.get(address).push(tx);
    }
    consensusBlock += 1;
    return result;
}

async function send(message) {
    return record(await blockchain.sendMessage(message));
}

function now() {
    return blockchain.now ?? Math.floor(Date.now() / 1000);
}

function messageJson(m) {
    const isInternal = m.info.type === 'internal';
    return {
        '@type': 'raw.message',
        source: m.info.type === 'external-in' ? '' : m.info.src.toRawString(),
        destination: m.info.type === 'external-out' ? '' : m.info.dest.toRawString(),
        value: isInternal ? m.info.value.coins.toString() : '0',
        bounced: isInternal ? m.info.bounced : false,
        body_hash: m.body.hash().toString('base64'),
        msg_data: { '@type': 'msg.dataRaw', body: m.body.toBoc().toString('base64'), init_state: '' },
    };
}

function transactionJson(tx) {
    return {
        '@type': 'raw.transaction',
        utime: tx.now,
        data: tx.raw.toBoc().toString('base64'),
        transaction_id: { '@type': 'internal.transactionId', lt: tx.lt.toString(), hash: tx.hash().toString('base64') },
        fee: tx.totalFees.coins.toString(),
        in_msg: tx.inMessage ? messageJson(tx.inMessage) : null,
        out_msgs: tx.outMessages.values().map(messageJson),
    };
}

function stackItemJson(item) {
    switch (item.type) {
        case 'int':
            return ['num', (item.value < 0n ? '-0x' : '0x') + (item.value < 0n ? -item.value : item.value).toString(16)];
        case 'cell':
        case 'slice':
        case 'builder':
            return ['cell', { bytes: item.cell.toBoc().toString('base64') }];
        case 'null':
            return ['null', null];
        default:
            throw new Error(`stack item ${item.type} is not supported`);
    }
}

function stackItemFromJson([kind, value]) {
    if (kind === 'num') return { type: 'int', value: BigInt(value) };
    if (kind === 'tvm.Slice') return { type: 'slice', cell: Cell.fromBase64(value) };
    if (kind === 'tvm.Cell') return { type: 'cell', cell: Cell.fromBase64(value) };
    throw new Error(`stack item ${kind} is not supported`);
}

async function getTransactions(query) {
    const address = Address.parse(query.get('address')).toRawString();
    const limit = Math.min(Number(query.get('limit') ?? 10), MAX_TRANSACTIONS_PER_PAGE);
    const fromLt = query.get('lt') ? BigInt(query.get('lt')) : null;
    const toLt = query.get('to_lt') ? BigInt(query.get('to_lt')) : 0n;
    const newestFirst = [...(history.get(address) ?? [])].reverse();
    return newestFirst
        .filter((tx) => (fromLt === null || tx.lt <= fromLt) && tx.lt > toLt)
        .slice(0, limit)
        .map(transactionJson);
}

async function deployWallet({ public_key, ton }) {
    const wallet = WalletContractV4.create({ workchain: 0, publicKey: Buffer.from(public_key, 'hex') });
    await send(internal({ from: admin.address, to: wallet.address, value: toNano(ton ?? '10'), bounce: false, stateInit: wallet.init }));
    return { address: wallet.address.toRawString() };
}

/** Deploys the standard jetton minter, mints `supply` to `owner`, and (`revoke`) gives up the admin for good. */
async function deployJetton({ supply, owner, revoke }) {
    const content = beginCell().storeUint(1, 8).storeStringTail('https://neurolov.ai/nlov.json').endCell();
    const minter = JettonMinter.createFromConfig({ admin: admin.address, content });
    await send(internal({ from: admin.address, to: minter.address, value: toNano('0.5'), stateInit: minter.init }));
    const mint = beginCell()
        .storeUint(21, 32).storeUint(0, 64).storeAddress(Address.parse(owner)).storeCoins(toNano('0.05'))
        .storeRef(beginCell()
            .storeUint(0x178d4519, 32).storeUint(0, 64).storeCoins(BigInt(supply))
            .storeAddress(minter.address).storeAddress(admin.address).storeCoins(0).storeBit(false)
            .endCell())
        .endCell();
    await send(internal({ from: admin.address, to: minter.address, value: toNano('0.2'), body: mint }));
    if (revoke) {
        const changeAdmin = beginCell().storeUint(3, 32).storeUint(0, 64).storeAddress(null).endCell();
        await send(internal({ from: admin.address, to: minter.address, value: toNano('0.05'), body: changeAdmin }));
    }
    return { master: minter.address.toRawString(), wallet_code_hash: JettonWallet.code.hash().toString('hex') };
}

/** `count` plain toncoin transfers to `to`: transactions that are not deposits, to page past. */
async function ping({ to, count }) {
    const dest = Address.parse(to);
    for (let i = 0; i < Math.min(Number(count), 1000); i++) {
        await send(internal({ from: admin.address, to: dest, value: toNano('0.001'), bounce: false }));
    }
    return { sent: count };
}

async function handle(method, url, body) {
    const query = url.searchParams;
    switch (`${method} ${url.pathname}`) {
        case 'GET /api/v2/getConsensusBlock':
            return { consensus_block: consensusBlock, timestamp: now() };
        case 'GET /api/v2/getAddressInformation': {
            const contract = await blockchain.getContract(Address.parse(query.get('address')));
            const type = contract.accountState?.type;
            const state = type === 'active' ? 'active' : type === 'frozen' ? 'frozen' : 'uninitialized';
            return { '@type': 'raw.fullAccountState', balance: contract.balance.toString(), state };
        }
        case 'GET /api/v2/getTransactions':
            return getTransactions(query);
        case 'POST /api/v2/runGetMethod': {
            const stack = (body.stack ?? []).map(stackItemFromJson);
            const result = await blockchain.runGetMethod(Address.parse(body.address), body.method, stack);
            return { gas_used: Number(result.gasUsed), exit_code: result.exitCode, stack: result.stack.map(stackItemJson) };
        }
        case 'POST /api/v2/sendBoc': {
            await send(loadMessage(Cell.fromBase64(body.boc).beginParse()));
            return { '@type': 'ok' };
        }
        case 'POST /sandbox/wallet':
            return deployWallet(body);
        case 'POST /sandbox/jetton':
            return deployJetton(body);
        case 'POST /sandbox/ping':
            return ping(body);
        case 'POST /sandbox/now':
            blockchain.now = body.now;
            return { now: now() };
        default:
            throw Object.assign(new Error(`no route ${method} ${url.pathname}`), { status: 404 });
    }
}

const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) req.destroy();
        else chunks.push(chunk);
    });
    req.on('end', async () => {
        const reply = (status, value) => {
            res.writeHead(status, { 'content-type': 'application/json' });
            res.end(JSON.stringify(value));
        };
        try {
            const text = Buffer.concat(chunks).toString('utf8');
            const result = await handle(req.method, new URL(req.url, 'http://sandbox'), text ? JSON.parse(text) : {});
            reply(200, { ok: true, result });
        } catch (e) {
            const status = e.status ?? 500;
            reply(status, { ok: false, error: String(e.message ?? e).slice(0, 2000), code: status });
        }
    });
});

server.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
