"""Serving: the chat app and the OpenAI-compatible API on one server, over the generation engines.

    winner.py  which variant to serve (the latest evaluation winner) and the arena's contenders
    pool.py    the served variants as Bots on their engines: adapters registered first, preload, threads
    ui.py      the Gradio app, one builder per tab
    api.py     /v1/models and /v1/chat/completions in OpenAI's shapes
    server.py  options, the FastAPI server both are mounted on, uvicorn (``assistant serve``, ``app.py``)
"""
