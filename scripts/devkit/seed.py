"""Demo data for local runs, inserted idempotently: a demo user holding credits (granted
through the ledger, so sum(ledger) = balance), a partner user and the pair linking them,
and the rows the sample events under events/ name: a shared journal entry, a private one
with a transcribed voice note, a generation and pending web orders (one Paymob, two
Stripe) that the webhook samples pay. Plus the S3 objects those samples read (an
uploaded photo, the generation's result and the voice note), put into
the local (in-memory) S3 at every start, and tokens for the two users. The tools and
products catalogs come from migrations.

Fixed ids, so a token printed by one `make dev` keeps working in the next, and the
samples keep naming rows that exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from uuid import UUID

DEMO_USER_ID = UUID("00000000-0000-4000-8000-00000000de60")  # scripts/token's default user
PARTNER_USER_ID = UUID("00000000-0000-4000-8000-00000000de61")
DEMO_PAIR_ID = UUID("00000000-0000-4000-8000-00000000de70")
DEMO_CREDITS = 100
#: Named by the sample events (events/<function>/*.json).
DEMO_ENTRY_ID = UUID("00000000-0000-4000-8000-0000000e0001")  # a shared entry of the demo user
#: A private entry of the demo user with a voice note, transcribed as an analysis leaves it.
DEMO_NOTES_ENTRY_ID = UUID("00000000-0000-4000-8000-0000000e0002")
DEMO_VOICE_NOTE_ID = UUID("00000000-0000-4000-8000-0000000a0001")
DEMO_VOICE_NOTE_KEY = f"users/{DEMO_USER_ID}/journal/{DEMO_NOTES_ENTRY_ID}/{DEMO_VOICE_NOTE_ID}.wav"
DEMO_TRANSCRIPT = "We walked along the beach at sunset. I feel lucky and calm."
DEMO_GENERATION_ID = UUID("7d5e2c1a-9b8f-4e3d-a2c1-0f9e8d7c6b5a")
DEMO_UPLOAD_KEY = f"users/{DEMO_USER_ID}/uploads/5f0c6a8e-3f1b-4d0a-9a57-1c2b3d4e5f60.jpg"
DEMO_RESULT_KEY = f"users/{DEMO_USER_ID}/generations/{DEMO_GENERATION_ID}.jpg"
#: Pending web orders the webhook samples pay: (id, product, provider, amount, currency,
#: provider order id, provider checkout id) as checkout would have left them.
DEMO_ORDERS = (
    (UUID("00000000-0000-4000-8000-0000000000a1"), "credits_50", "stripe", 499, "USD",
     "cs_test_sample0001", "cs_test_sample0001"),
    (UUID("00000000-0000-4000-8000-0000000000a2"), "premium_monthly", "stripe", 799, "USD",
     "cs_test_sample0002", "cs_test_sample0002"),
    (UUID("00000000-0000-4000-8000-0000000000a3"), "credits_50", "paymob", 25000, "EGP",
     "217503760", "pi_test_sample0001"),
)

# Named queries. Every statement is a no-op the second time: users and pairs by their
# fixed ids, the grant by the ledger's unique (source, ref), the balance only moved by a
# grant row inserted in the same statement.
INSERT_USERS = """
INSERT INTO users (id, email) VALUES (%(demo)s, 'demo@example.com'), (%(partner)s, 'partner@example.com')
ON CONFLICT DO NOTHING
"""
GRANT_DEMO_CREDITS = """
WITH granted AS (
    INSERT INTO credit_ledger (user_id, amount, kind, reason, source, ref)
    VALUES (%(demo)s, %(credits)s, 'grant', 'demo credits for local runs', 'seed', 'demo-credits')
    ON CONFLICT (source, ref) DO NOTHING
    RETURNING user_id, amount
)
UPDATE users SET credits = users.credits + granted.amount, updated_at = now()
FROM granted WHERE users.id = granted.user_id
"""
INSERT_PAIR = "INSERT INTO pairs (id) VALUES (%(pair)s) ON CONFLICT DO NOTHING"
INSERT_PAIR_MEMBERS = """
INSERT INTO pair_members (pair_id, user_id) VALUES (%(pair)s, %(demo)s), (%(pair)s, %(partner)s)
ON CONFLICT DO NOTHING
"""
DEMO_BALANCE = "SELECT credits FROM users WHERE id = %(demo)s"
INSERT_ENTRY = """
INSERT INTO journal_entries (id, author_id, pair_id, title, content, visibility)
VALUES (%(entry)s, %(demo)s, %(pair)s, 'Our first week',
        'We cooked dinner together and laughed about the burnt rice. I feel happy and grateful.', 'shared')
ON CONFLICT (id) DO NOTHING
"""
INSERT_NOTES_ENTRY = """
INSERT INTO journal_entries (id, author_id, title, content, visibility)
VALUES (%(notes_entry)s, %(demo)s, 'Beach walk', 'A voice note from the beach.', 'private')
ON CONFLICT (id) DO NOTHING
"""
INSERT_VOICE_NOTE = """
INSERT INTO journal_attachments (id, entry_id, author_id, kind, content_type, object_key, declared_bytes,
                                 sha256, bytes, duration_s, transcript, language, described_by)
VALUES (%(voice_note)s, %(notes_entry)s, %(demo)s, 'audio', 'audio/wav', %(voice_key)s, %(voice_bytes)s,
        %(voice_sha256)s, %(voice_bytes)s, %(voice_seconds)s, %(transcript)s, 'english', 'whisper-1')
ON CONFLICT (id) DO NOTHING
"""
#: A generation as process-image stores one (free here: no reservation, no ledger row).
INSERT_GENERATION = """
INSERT INTO generations (id, user_id, tool_id, params, source_key, result_key, result_content_type,
                         result_bytes, width, height, status, credits_charged)
VALUES (%(generation)s, %(demo)s, 'resize', '{"width": 320, "fit": "contain"}', %(upload_key)s,
        %(result_key)s, 'image/jpeg', %(result_bytes)s, 320, 240, 'succeeded', 0)
ON CONFLICT (id) DO NOTHING
"""
INSERT_ORDER = """
INSERT INTO orders (id, user_id, product_id, provider, status, amount_minor, currency, provider_order_id,
                    provider_checkout_id)
VALUES (%(id)s, %(demo)s, %(product)s, %(provider)s, 'pending', %(amount)s, %(currency)s,
        %(provider_order_id)s, %(checkout_id)s)
ON CONFLICT DO NOTHING
"""


@dataclass(frozen=True)
class Seeded:
    demo_user_id: UUID
    partner_user_id: UUID
    pair_id: UUID
    demo_credits: int  # the demo user's balance now


def seed(database_url: str) -> Seeded:
    """Insert the demo data (one transaction); running it again changes nothing."""
    import psycopg

    params = {"demo": DEMO_USER_ID, "partner": PARTNER_USER_ID, "pair": DEMO_PAIR_ID, "credits": DEMO_CREDITS}
    params |= {"entry": DEMO_ENTRY_ID, "generation": DEMO_GENERATION_ID, "upload_key": DEMO_UPLOAD_KEY,
               "result_key": DEMO_RESULT_KEY, "result_bytes": len(demo_images()[1])}
    import hashlib

    note = demo_voice_note()
    params |= {"notes_entry": DEMO_NOTES_ENTRY_ID, "voice_note": DEMO_VOICE_NOTE_ID,
               "voice_key": DEMO_VOICE_NOTE_KEY,
               "voice_bytes": len(note), "voice_sha256": hashlib.sha256(note).hexdigest(),
               "voice_seconds": DEMO_VOICE_SECONDS, "transcript": DEMO_TRANSCRIPT}
    with psycopg.connect(database_url) as conn:
        for query in (INSERT_USERS, GRANT_DEMO_CREDITS, INSERT_PAIR, INSERT_PAIR_MEMBERS, INSERT_ENTRY,
                      INSERT_GENERATION, INSERT_NOTES_ENTRY, INSERT_VOICE_NOTE):
            conn.execute(query, params)
        for oid, product, provider, amount, currency, provider_order_id, checkout_id in DEMO_ORDERS:
            conn.execute(INSERT_ORDER, params | {
                "id": oid, "product": product, "provider": provider, "amount": amount, "currency": currency,
                "provider_order_id": provider_order_id, "checkout_id": checkout_id})
        row = conn.execute(DEMO_BALANCE, params).fetchone()
    return Seeded(DEMO_USER_ID, PARTNER_USER_ID, DEMO_PAIR_ID, int(row[0]) if row else 0)


@cache
def demo_images() -> tuple[bytes, bytes]:
    """(the demo photo, 640x480, and its 320x240 resize), JPEG, drawn with Pillow: a
    gradient with a few shapes, so tools have something to work on."""
    from io import BytesIO

    from PIL import Image, ImageDraw

    photo = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    draw = ImageDraw.Draw(photo)
    draw.ellipse((220, 120, 420, 320), fill=(230, 120, 40))
    draw.rectangle((40, 360, 600, 440), fill=(40, 90, 160))
    encoded = []
    for image in (photo, photo.resize((320, 240))):
        out = BytesIO()
        image.save(out, "JPEG", quality=85)
        encoded.append(out.getvalue())
    return encoded[0], encoded[1]


DEMO_VOICE_SECONDS = 2.0


@cache
def demo_voice_note() -> bytes:
    """Two seconds of a quiet tone as a 16 kHz mono WAV (standard library only)."""
    import math
    import struct
    import wave
    from io import BytesIO

    rate = 16000
    frames = b"".join(struct.pack("<h", int(3000 * math.sin(2 * math.pi * 330 * i / rate)))
                      for i in range(int(rate * DEMO_VOICE_SECONDS)))
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)
    return out.getvalue()


def seed_objects(endpoint: str, *, uploads_bucket: str, generations_bucket: str) -> None:
    """Put the demo photo (the samples' ``source_key``) and the demo generation's result
    into the local S3 (moto keeps objects in memory: this runs at every start)."""
    import boto3

    from devkit import s3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=s3.FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=s3.FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    photo, result = demo_images()
    client.put_object(Bucket=uploads_bucket, Key=DEMO_UPLOAD_KEY, Body=photo, ContentType="image/jpeg")
    client.put_object(Bucket=generations_bucket, Key=DEMO_RESULT_KEY, Body=result, ContentType="image/jpeg")
    client.put_object(Bucket=uploads_bucket, Key=DEMO_VOICE_NOTE_KEY, Body=demo_voice_note(),
                      ContentType="audio/wav")


def token(user_id: UUID | str, secret: str, *, issuer: str | None = None, audience: str | None = None,
          ttl: timedelta = timedelta(days=7)) -> str:
    """An HS256 bearer token for ``user_id`` (its ``sub``), minted by the layer's auth
    module as the functions verify it; the first value of a rotated (comma-separated) secret."""
    from common.auth import mint_token

    key = next(part.strip() for part in secret.split(",") if part.strip())
    return mint_token(user_id, ttl_s=int(ttl.total_seconds()), secret=key, issuer=issuer, audience=audience)
