"""Serving: an OpenAI-compatible HTTP API and a web chat page over the
continuous-batching engine (`opens1.infer.engine`).

    opens1 serve --model DIR_OR_PRESET [--host H] [--port P] [--api-key KEY]

Modules: `load` (model loading and the server state), `server` (uvicorn, in the foreground
or in a thread for tests), `app` (the FastAPI app and its error handlers), `routes/` (one
module per endpoint family), `auth` (the API key and the Host check), `payload` (request
bodies in, JSON and SSE out), `bridge` (requests to the engine and back), `state` (what
the routes share), `protocol` (pydantic request/response schemas), `prepare` (budgets
checked before expensive work; the rendering done in workers), `workers` (the
worker-process pools), `structured` (response_format by constrained decoding), `metrics`
(Prometheus), `molecule` (RDKit drawing), `text` (streamed detokenization, stop strings,
reasoning split), `web/` (the page). The command itself is `opens1/cli/serve.py`.
"""
