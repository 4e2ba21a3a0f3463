"""The smallest taskq app: run ``taskq worker -A examples.shop:app`` and call ``add.delay(2, 3)``."""

from taskq import App

app = App("shop")


@app.task
def add(x, y):
    return x + y


@app.task(queue="orders")
def place_order(item: str, quantity: int) -> dict:
    return {"item": item, "quantity": quantity, "status": "placed"}
