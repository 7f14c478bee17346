"""The official `openai` Python client, unmodified, against a Neurolov coordinator (issue 13's compatibility test).

Usage: openai_client.py BASE_URL API_KEY EMBEDDING_MODEL CHAT_MODEL
Prints one JSON object with what each call returned, for the Rust test to check against the engine's own output.
"""

import base64
import json
import struct
import sys

import openai
from openai import OpenAI

base_url, api_key, embedding_model, chat_model = sys.argv[1:5]
client = OpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0, timeout=300)
texts = ["The quick brown fox jumps over the lazy dog.", "Verified inference makes a wrong answer unprofitable."]
question = [{"role": "user", "content": "What is the capital of France?"}]

out = {"version": openai.__version__}
out["models"] = [m.id for m in client.models.list()]
# The client's default asks for base64 and decodes it into floats itself.
default = client.embeddings.create(model=embedding_model, input=texts)
out["embeddings_default"] = [d.embedding for d in default.data]
out["prompt_tokens"] = default.usage.prompt_tokens
floats = client.embeddings.create(model=embedding_model, input=texts, encoding_format="float")
out["embeddings_float"] = [d.embedding for d in floats.data]
raw = client.embeddings.with_raw_response.create(model=embedding_model, input=texts[0], encoding_format="base64")
b64 = json.loads(raw.text)["data"][0]["embedding"]
out["embedding_base64"] = list(struct.unpack("<%df" % (len(base64.b64decode(b64)) // 4), base64.b64decode(b64)))
chat = client.chat.completions.create(model=chat_model, messages=question, max_tokens=16, temperature=0)
out["chat"] = chat.choices[0].message.content
out["chat_finish"] = chat.choices[0].finish_reason
out["chat_usage"] = [chat.usage.prompt_tokens, chat.usage.completion_tokens]
pieces = []
finish = None
for chunk in client.chat.completions.create(
    model=chat_model, messages=question, max_tokens=16, temperature=0, stream=True
):
    if chunk.choices:
        pieces.append(chunk.choices[0].delta.content or "")
        finish = chunk.choices[0].finish_reason or finish
out["stream"] = "".join(pieces)
out["stream_finish"] = finish
try:
    OpenAI(base_url=base_url + "/v1", api_key="nlv-wrong", max_retries=0).models.list()
    client.embeddings.create(model="no-such-model", input="x")
except openai.NotFoundError as e:
    out["unknown_model"] = e.status_code
except openai.AuthenticationError as e:
    out["unknown_model"] = "auth %d" % e.status_code
try:
    OpenAI(base_url=base_url + "/v1", api_key="nlv-wrong", max_retries=0).embeddings.create(
        model=embedding_model, input="x"
    )
except openai.AuthenticationError as e:
    out["bad_key"] = e.status_code
print(json.dumps(out))
