"""Serving: an OpenAI-compatible HTTP API and a web chat page over the
continuous-batching engine (`opens1.infer.engine`).

    opens1 serve --model DIR_OR_PRESET [--host H] [--port P] [--api-key KEY]

Modules: `cli` (the command, model loading, a background server for tests),
`api` (FastAPI routes, auth, Host check), `protocol` (pydantic request/response schemas),
`prepare` (budgets checked before expensive work; the rendering done in workers),
`workers` (the worker-process pools), `molecule` (RDKit drawing),
`text` (streamed detokenization, stop strings, reasoning split), `web/` (the page).
"""
