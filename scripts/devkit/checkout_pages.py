"""The local checkout pages of the Paymob and Stripe fakes: what the buyer sees at the
checkout URL the checkout function answers, so a whole purchase can be clicked through
in a browser under `make dev`.

A checkout page shows the order and three buttons (plain HTML forms, no script):

- **Pay**: the provider's webhook for a successful payment of the order's amount;
- **Decline**: the provider's webhook for a failed payment;
- **Pay a wrong amount**: a successful payment of another amount (the webhook must refuse
  to deliver it: ``mismatch``).

Each is signed as the provider signs it and POSTed to the runner's webhook URL; the
result page then shows what was sent and what the webhook answered, with the link the
provider would send the buyer back to. Every value shown is HTML-escaped (product
names and billing details come from the client).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from devkit.fake_http import Page

OUTCOMES = {"pay": "Pay", "decline": "Decline", "wrong_amount": "Pay a wrong amount"}

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem;
       color: #1a1a1a; }
header { font-size: .8rem; text-transform: uppercase; letter-spacing: .08em; color: #666; }
h1 { font-size: 1.6rem; margin: .2rem 0 1.2rem; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { width: 40%; color: #555; font-weight: normal; }
form { display: inline; }
button { font: inherit; padding: .55rem 1.1rem; margin: 0 .4rem .6rem 0; border-radius: .4rem;
         border: 1px solid #999; background: #fff; cursor: pointer; }
button[value=pay] { background: #1d7a3b; border-color: #1d7a3b; color: #fff; }
pre { background: #f4f4f4; padding: .75rem; overflow-x: auto; font-size: .8rem; white-space: pre-wrap; }
.note { color: #666; font-size: .85rem; }
"""


def wrong_amount(amount_minor: int) -> int:
    """The amount the "wrong amount" button pays: half, so it is plainly not the order's."""
    return amount_minor // 2 if amount_minor > 1 else amount_minor + 1


def money(amount_minor: int, currency: str) -> str:
    return f"{amount_minor / 100:,.2f} {currency.upper()}"


def _rows(rows: Iterable[tuple[str, str, str]]) -> str:
    """``(id, label, value)`` rows of a table; ids let tests and scripts find the values."""
    return "".join(f'<tr><th>{html.escape(label)}</th><td id="{html.escape(key)}">{html.escape(value)}'
                   "</td></tr>" for key, label, value in rows)


def _layout(provider: str, title: str, content: str) -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · '
            f'{html.escape(provider)} (local)</title><meta name="viewport" content="width=device-width">'
            f"<style>{_STYLE}</style></head><body><header>{html.escape(provider)} · local fake, no real "
            f"payment</header><h1>{html.escape(title)}</h1>{content}</body></html>")


def checkout_page(provider: str, *, action: str, hidden: Mapping[str, str],
                  rows: Iterable[tuple[str, str, str]], webhook_url: str | None) -> Page:
    """The order with its three buttons, each a form POSTing ``outcome`` to ``action``."""
    fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                     for k, v in hidden.items())
    buttons = "".join(f'<form method="post" action="{html.escape(action)}">{fields}'
                      f'<button type="submit" name="outcome" value="{key}" id="{key}">{label}</button></form>'
                      for key, label in OUTCOMES.items())
    where = (f"Each button sends {html.escape(provider)}'s signed webhook to "
             f"<code>{html.escape(webhook_url)}</code>." if webhook_url else
             "No webhook URL is configured: the buttons can't notify anyone.")
    return Page(_layout(provider, "Checkout", f'<table id="order">{_rows(rows)}</table>{buttons}'
                                              f'<p class="note">{where}</p>'))


@dataclass
class Delivery:
    """One webhook sent for a button: what, where, and the answer."""

    event: str
    url: str
    status: int | None  # None: the URL could not be reached
    answer: str


def send(url: str, body: bytes, headers: Mapping[str, str], event: str) -> Delivery:
    """POST a signed webhook as the provider's servers do; never raises."""
    import requests

    try:
        response = requests.post(url, data=body, headers={"content-type": "application/json", **headers},
                                 timeout=60)
    except requests.RequestException as exc:
        return Delivery(event, url, None, f"{type(exc).__name__}: {exc}")
    return Delivery(event, url, response.status_code, response.text[:4000])


Rows = Iterable[tuple[str, str, str]]


def result_page(provider: str, outcome: str, deliveries: list[Delivery], *, rows: Rows,
                return_url: str | None, error: str | None = None) -> Page:
    """What the button did: the webhooks sent and their answers, and the way back."""
    status = 200 if not error and deliveries and all(d.status == 200 for d in deliveries) else 502
    sent = "".join(f'<li><code>{html.escape(d.event)}</code> to <code>{html.escape(d.url)}</code>: '
                   f'<strong class="webhook-status">{d.status if d.status is not None else "unreachable"}'
                   f'</strong><pre class="webhook-answer">{html.escape(d.answer)}</pre></li>'
                   for d in deliveries)
    parts = [f'<p id="result" data-outcome="{html.escape(outcome)}" data-status="{status}">'
             f"{html.escape(OUTCOMES.get(outcome, outcome))}: "
             f"{'done' if status == 200 else 'the webhook did not take it (see below)'}</p>"]
    if error:
        parts.append(f'<p id="error">{html.escape(error)}</p>')
    parts.append(f'<table id="order">{_rows(rows)}</table>')
    if sent:
        parts.append(f'<p>Sent:</p><ul id="deliveries">{sent}</ul>')
    if return_url:
        parts.append(f'<p><a id="return" href="{html.escape(return_url)}">Back to the shop</a> '
                     f'<span class="note">(where {html.escape(provider)} sends the buyer)</span></p>')
    return Page(_layout(provider, "Payment " + ("sent" if status == 200 else "not taken"), "".join(parts)))


def not_found(provider: str, what: str) -> Page:
    return Page(_layout(provider, "Not found", f"<p>{html.escape(what)}</p>"))
