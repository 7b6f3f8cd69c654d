"""How an application talks to fleet: the official `openai` client, unchanged, pointed at the gateway."""

from __future__ import annotations

import openai


async def chat_through_gateway(base_url: str, key: str, model: str, prompt: str = "Say hello.",
                               max_tokens: int = 16, timeout: float = 120.0) -> tuple[str, str]:
    """One chat completion without and one with streaming; returns (text, streamed text).

    `base_url` is the controller's HTTP address (http://127.0.0.1:8080), `key` a `fleet apikey create`
    key and `model` a deployment name. Raises the client's own errors (e.g. openai.InternalServerError
    for the gateway's 503), with retries off so a test sees the first answer.
    """
    client = openai.AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=timeout)
    try:
        messages = [{"role": "user", "content": prompt}]
        reply = await client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                                     max_tokens=max_tokens, temperature=0)
        text = reply.choices[0].message.content or ""
        parts: list[str] = []
        stream = await client.chat.completions.create(model=model, messages=messages,  # type: ignore[arg-type]
                                                      max_tokens=max_tokens, temperature=0, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
        return text, "".join(parts)
    finally:
        await client.close()
