"""The bare handler of scripts/bench/runner.py: no imports, no work, a fixed response."""


def handler(event, context):
    return {"statusCode": 200, "headers": {"content-type": "text/plain"}, "body": "ok"}
