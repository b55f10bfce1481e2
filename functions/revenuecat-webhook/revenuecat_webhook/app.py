"""revenuecat-webhook: the function URL RevenueCat posts its events to (root path ``/``).

Wiring only: check the Authorization header, parse the body, hand the event to
``delivery``, answer. RevenueCat counts only 200 as success and retries anything else
(5 times, up to 80 minutes apart), so: 200 for processed, duplicate, ignored and
unmatched events; 400 for a body that is no RevenueCat event; 401 for a wrong header;
413 for a body over 256 KiB; 503 (Retry-After) when the database is unavailable; 500
otherwise (the delivery is kept in the inbox as failed).
"""

from aws_lambda_powertools.metrics import MetricUnit

from common import config, http, signing
from common.errors import SignatureError
from common.observability import metrics
from common.providers import revenuecat_delivery as delivery
from common.providers import revenuecat_events as events

#: RevenueCat events are a few KiB; subscriber attributes can add some. Far above that
#: is not RevenueCat.
MAX_BODY_BYTES = 256 * 1024

app = http.make_resolver(max_body_bytes=MAX_BODY_BYTES)


@app.post("/")
def webhook() -> dict[str, str]:
    metrics.add_metric(name="RevenueCatDeliveries", unit=MetricUnit.Count, value=1)
    request = app.current_event
    expected = config.secret_list("REVENUECAT_WEBHOOK_AUTH")
    if not signing.verify_revenuecat(request.headers.get("authorization"), expected):
        raise SignatureError("invalid authorization")
    body = signing.raw_body(request.raw_event)
    webhook = events.parse(body)
    result = delivery.deliver(webhook, body, request.headers)
    metrics.add_metric(name=f"RevenueCat{result.status.capitalize()}", unit=MetricUnit.Count, value=1)
    return {"status": result.status, "event_id": webhook.event.id}


handler = http.make_handler(app)
