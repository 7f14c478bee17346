// NLOV on chains, shown the same way on the dashboard (everyone's) and the provider page (the tab's own): deposits
// credited and withdrawals with their state and chain transaction, newest first.

const NANO = 1e9;

export function nlov(nano) {
  return (Number(nano) / NANO).toLocaleString("en", { maximumFractionDigits: 9 });
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  td.textContent = value;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function shortTx(tx) {
  return tx ? (tx.length > 20 ? `${tx.slice(0, 10)}…${tx.slice(-6)}` : tx) : "–";
}

/// Fills `tbody` with `deposits` and `withdrawals` merged newest first; with `showAccount`, an account column too.
export function activityRows(tbody, deposits, withdrawals, showAccount) {
  const entries = [
    ...deposits.map((d) => ({ ms: d.credited_ms, kind: "deposit", state: "credited", tx: d.tx_id, peer: "", ...d })),
    ...withdrawals.map((w) => ({ ms: w.requested_ms, kind: "withdrawal", tx: w.tx_id, peer: w.to, ...w })),
  ].sort((a, b) => b.ms - a.ms);
  tbody.replaceChildren();
  for (const e of entries) {
    const row = document.createElement("tr");
    row.dataset.kind = e.kind;
    row.dataset.chain = e.chain;
    cell(row, new Date(Number(e.ms)).toISOString().replace("T", " ").slice(0, 19));
    cell(row, e.chain, "chain");
    cell(row, e.kind);
    if (showAccount) cell(row, `${e.account.slice(0, 10)}…`);
    cell(row, `${nlov(e.amount_nano)} NLOV`, "amount");
    cell(row, e.reason ? `${e.state}: ${e.reason}` : e.state, "state");
    const tx = document.createElement("td");
    tx.className = "mono tx";
    tx.title = e.tx || "";
    tx.textContent = shortTx(e.tx);
    row.appendChild(tx);
    tbody.appendChild(row);
  }
}
