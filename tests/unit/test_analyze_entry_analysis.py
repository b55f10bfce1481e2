"""analyze-entry's analysis schema and its offline analyser, without a database."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from devkit import lambdas


@pytest.fixture(scope="module")
def mods():
    lambdas.load_handler("analyze-entry")  # CodeUri on sys.path, as Lambda does
    from analyze_entry import offline_analyser, schema

    return schema, offline_analyser


# --- the schema ------------------------------------------------------------------------


def test_goemotions_labels_and_the_ekman_mapping(mods):
    schema, _ = mods
    assert len(schema.GO_EMOTIONS) == 28 and "neutral" in schema.GO_EMOTIONS
    # every label maps to exactly one Ekman category
    mapped = [label for labels in schema.EKMAN_MAPPING.values() for label in labels]
    assert sorted(mapped) == sorted(schema.GO_EMOTIONS)
    assert set(schema.EKMAN_MAPPING) == set(schema.EKMAN)
    assert schema.EKMAN_OF["caring"] == "joy" and schema.EKMAN_OF["disapproval"] == "anger"
    assert schema.EKMAN_OF["embarrassment"] == "sadness" and schema.EKMAN_OF["curiosity"] == "surprise"
    assert set(schema.MOOD_VALENCE) == set(schema.Mood.__args__)


def _analysis(schema, **overrides):
    fields = {"mood": "sad", "sentiment": -0.4, "emotions": [{"label": "grief", "intensity": 0.8}],
              "tags": ["loss"], "summary": "The author lost their father.", "safety_flag": False,
              "source": "offline", "model": "m", "prompt_version": "p"}
    return schema.Analysis.model_validate({**fields, **overrides})


def test_ekman_is_derived_never_taken(mods):
    schema, _ = mods
    analysis = _analysis(schema, emotions=[{"label": "grief", "intensity": 0.8},
                                           {"label": "remorse", "intensity": 0.9},
                                           {"label": "relief", "intensity": 0.2}],
                         ekman={"joy": 1.0})  # stored or forged ekman is ignored
    assert analysis.ekman["sadness"] == 0.9 and analysis.ekman["joy"] == 0.2 and analysis.ekman["anger"] == 0
    # and it round-trips through its JSON (as stored on the entry and in the cache)
    dumped = analysis.model_dump(mode="json")
    assert schema.Analysis.model_validate(json.loads(json.dumps(dumped))) == analysis
    assert dumped["schema_version"] == schema.SCHEMA_VERSION == 2


@pytest.mark.parametrize("field, value", [
    ("sentiment", 1.5), ("sentiment", -1.01), ("mood", "ecstatic"),
    ("emotions", [{"label": "joy", "intensity": 1.2}]),
    ("emotions", [{"label": "happiness", "intensity": 0.5}]),
    ("safety_flag", "maybe"),
])
def test_out_of_range_values_are_refused(mods, field, value):
    schema, _ = mods
    with pytest.raises(ValidationError):
        _analysis(schema, **{field: value})


def test_tags_and_summary_are_normalised(mods):
    schema, _ = mods
    analysis = _analysis(schema, tags=["#Work Stress", "work_stress", " Family ", "", "Ünïcode Straße!",
                                       *[f"t{i}" for i in range(10)]],
                         summary="  First sentence.   Second one!  Third?  ",
                         emotions=[{"label": "joy", "intensity": 0.2}, {"label": "joy", "intensity": 0.7}])
    assert analysis.tags[:3] == ["work-stress", "family", "ünïcode-straße"]
    assert len(analysis.tags) == schema.MAX_TAGS
    assert analysis.summary == "First sentence. Second one!"
    assert [(e.label, e.intensity) for e in analysis.emotions] == [("joy", 0.7)]
    japanese = "今日はいい日でした。とても嬉しい。明日も頑張る。"
    assert schema.clip_summary(japanese) == "今日はいい日でした。 とても嬉しい。"
    long = schema.clip_summary("word " * 200)
    assert len(long) <= schema.MAX_SUMMARY_CHARS and long.endswith("\u2026")
    assert _analysis(schema, emotions=[]).emotions[0].label == "neutral"


def test_structured_output_schema_is_strict_and_plain(mods):
    # The JSON schema sent to OpenAI: every field required, no extra keys, and no range
    # keywords (enforced by validators instead), so any structured-output model takes it.
    from openai.lib._pydantic import to_strict_json_schema

    schema, _ = mods
    sent = to_strict_json_schema(schema.AnalysisCore)
    assert sent["additionalProperties"] is False
    assert set(sent["required"]) == {"mood", "sentiment", "emotions", "tags", "summary", "safety_flag"}
    text = json.dumps(sent)
    for keyword in ("minimum", "maximum", "maxItems", "maxLength", "minLength"):
        assert keyword not in text
    assert sent["properties"]["mood"]["enum"] == list(schema.Mood.__args__)


def test_entry_input_limits(mods):
    schema, _ = mods
    assert schema.EntryIn(content="hi").visibility == "private"
    for bad in ({"content": ""}, {"content": "   "}, {"content": "x" * 20_001},
                {"content": "x", "visibility": "public"}, {"content": "x", "extra": 1}):
        with pytest.raises(ValidationError):
            schema.EntryIn.model_validate(bad)


# --- the offline analyser --------------------------------------------------------------

ENTRIES = {
    "joyful": "We got the keys to our first apartment today! I was so happy I cried a little. "
              "Sam cooked dinner and we danced in the empty living room.",
    "grieving": "Dad passed away this morning. I can't stop crying. The house feels so empty "
                "without him and I keep thinking about the funeral on Friday. I miss him so much.",
    "anxious": "Big presentation at work tomorrow and I'm so nervous. I couldn't sleep, my mind "
               "keeps racing about everything that could go wrong.",
    "angry": "I am furious. My landlord kept the whole deposit again and refused to explain why. "
             "This is so unfair and I hate being treated like this.",
    "grateful": "So thankful for my friends today. They showed up with soup when I was sick and "
                "stayed all evening. I really appreciate them.",
    "neutral": "Went to the store, bought groceries, did laundry. Watched a documentary about "
               "bridges in the evening.",
    "mixed": "Graduation was wonderful and I was so proud, but I also felt sad that my "
             "grandmother wasn't there to see it.",
}


@pytest.mark.parametrize("mood", sorted(ENTRIES))
def test_offline_moods_are_sensible(mods, mood):
    schema, offline = mods
    analysis = offline.analyse(None, ENTRIES[mood])
    assert analysis.mood == mood
    assert analysis.source == "offline" and analysis.model == offline.MODEL
    expected_sign = schema.MOOD_VALENCE[mood]
    if expected_sign:
        assert analysis.sentiment * expected_sign > 0.2
    assert not analysis.safety_flag


def test_offline_tags_summary_and_language(mods):
    _, offline = mods
    grief = offline.analyse("Dad", ENTRIES["grieving"])
    assert {"family", "loss"} <= set(grief.tags)
    assert grief.summary and all(s in ENTRIES["grieving"] for s in grief.summary.split(". ")[:1])
    # Another language: no English cues, so neutral; the summary quotes it in its language
    french = offline.analyse(None, "Aujourd'hui était une journée magnifique. J'ai vu mes amis au parc.")
    assert french.mood == "neutral" and french.tags == []
    assert french.summary.startswith("Aujourd'hui")


def test_offline_negation_and_safety_flag(mods):
    _, offline = mods
    assert "sadness" not in {e.label for e in offline.analyse(None, "I am not sad about it.").emotions}
    assert "sadness" in {e.label for e in offline.analyse(None, "I can't stop crying.").emotions}
    crisis = offline.analyse(None, "Everything feels pointless. I don't want to be here anymore.")
    assert crisis.safety_flag and crisis.mood == "sad"  # the flag is separate from the mood
    assert not offline.analyse(None, ENTRIES["anxious"]).safety_flag


def test_offline_analysis_is_deterministic(mods):
    _, offline = mods
    text = " ".join(ENTRIES.values()) * 3
    assert offline.analyse("t", text) == offline.analyse("t", text)
