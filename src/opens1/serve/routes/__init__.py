"""The API's routes, one module per endpoint family; each has a `router` behind the API
key (serve/auth.py) that `serve/app.py` includes."""
