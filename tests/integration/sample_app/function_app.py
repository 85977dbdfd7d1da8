"""A small v2-model app that exercises every feature of the local Functions host."""

import time

import azure.functions as func

# The script root is on sys.path in the host, as in Azure; mypy run from the repo root cannot see it.
from sample_calls import record  # type: ignore[import-not-found,unused-ignore]
from sample_http import bp  # type: ignore[import-not-found,unused-ignore]

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(bp)


@app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%")
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, at=time.time())


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
def on_startup(timer: func.TimerRequest) -> None:
    record("on_startup", past_due=timer.past_due)


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="AzureWebJobsStorage")
@app.queue_output(arg_name="out", queue_name="sample-out", connection="AzureWebJobsStorage")
def record_message(msg: func.QueueMessage, out: func.Out[str], context: func.Context) -> None:
    body = msg.get_body().decode("utf-8")
    record("record_message", body=body, dequeue_count=msg.dequeue_count, function_name=context.function_name)
    out.set(f"seen:{body}")


@app.queue_trigger(arg_name="msg", queue_name="sample-out", connection="AzureWebJobsStorage")
def echo_out(msg: func.QueueMessage) -> None:
    record("echo_out", body=msg.get_body().decode("utf-8"))


@app.queue_trigger(arg_name="msg", queue_name="sample-flaky", connection="AzureWebJobsStorage")
def flaky(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode("utf-8")
    record("flaky", body=body, dequeue_count=msg.dequeue_count)
    if body.startswith("fail"):
        raise RuntimeError(f"the sample refuses {body}")


@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_SLOW_QUEUE%", connection="AzureWebJobsStorage")
def slow(msg: func.QueueMessage) -> None:
    """Body `<name>:<seconds>`: records its start, works that long, records its end."""
    body = msg.get_body().decode("utf-8")
    name, _, seconds = body.partition(":")
    record("slow_started", body=name, dequeue_count=msg.dequeue_count)
    time.sleep(float(seconds or 0))
    record("slow_done", body=name, dequeue_count=msg.dequeue_count)
