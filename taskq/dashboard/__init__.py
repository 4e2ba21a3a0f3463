"""``taskq dashboard``: a live web page of an app's queues, workers, throughput, failures and logs.

Needs the ``dashboard`` extra (Starlette, uvicorn). Nothing here imports them at import
time, so ``taskq`` itself runs without them: the command says what to install instead.
"""
