"""The flow files our side runs, written as YAML into a folder (standard library only)."""

from __future__ import annotations

from pathlib import Path

from .common import LITELLM_KEY, LITELLM_MODEL

BENCH3 = """\
version: 1
name: bench3
inputs: {prompt: {type: string}}
steps:
  - {id: a, model: echo, memory_id: s, prompt: "{{ inputs.prompt }}"}
  - {id: b, model: echo, memory_id: s, prompt: "again"}
  - {id: c, model: echo, memory_id: s, prompt: "once more"}
outputs: {response: "{{ c.return }}"}
"""

CHAT = """\
version: 1
name: chat
inputs: {prompt: {type: string}}
steps:
  - {id: a, model: echo, memory_id: s, prompt: "{{ inputs.prompt }}"}
outputs: {response: "{{ a.return }}"}
"""


MAP = """\
version: 1
name: map
inputs: {items: {type: array}}
steps:
  - id: each
    type: map
    items: "{{ inputs.items }}"
    steps:
      - {id: say, model: echo, prompt: "{{ item }}"}
"""


def fan(width: int = 20, delay: float = 0.2) -> str:
    """`width` independent echo steps that each take `delay` seconds."""
    steps = "\n".join(
        f'  - {{id: s{i}, model: echo, params: {{delay: {delay}}}, prompt: "{{{{ inputs.prompt }}}} {i}"}}'
        for i in range(width)
    )
    return f"version: 1\nname: fan{width}\ninputs: {{prompt: {{type: string}}}}\nsteps:\n{steps}\n"


def litellm3(api_base: str) -> str:
    """The 3-step flow with a litellm model on the loopback server."""
    params = f"{{api_base: '{api_base}', api_key: {LITELLM_KEY}}}"
    return BENCH3.replace("model: echo", f"model: {LITELLM_MODEL}, params: {params}").replace(
        "name: bench3", "name: litellm3"
    )


def write(folder: str | Path, name: str, text: str) -> Path:
    """Write `text` to FOLDER/NAME.yaml and return the path."""
    path = Path(folder) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# One step on an OpenAI-compatible server, named the way users name it; the address comes
# from OPENAI_API_BASE (the CLI benchmark) or from `api_base` (the in-process one).
OPENAI_ONE = """\
version: 1
name: one
inputs: {prompt: {type: string}}
steps:
  - {id: answer, model: openai/gpt-4o-mini, prompt: "{{ inputs.prompt }}"}
"""


def openai_one(api_base: str | None = None) -> str:
    """The one-step flow on `openai/gpt-4o-mini`, at `api_base` when given."""
    if api_base is None:
        return OPENAI_ONE
    params = f"params: {{api_base: '{api_base}', api_key: {LITELLM_KEY}}}"
    model = "model: openai/gpt-4o-mini,"
    return OPENAI_ONE.replace(model, f"{model} {params},")
