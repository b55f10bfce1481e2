"""The offline analyser: no network, no key, deterministic, a few milliseconds an entry.

- sentiment: VADER (vaderSentiment, rule-based, its lexicon ships in the package) per
  sentence, averaged over the sentences that carry sentiment, blended with the emotion
  cues' balance (VADER alone reads "I can't stop crying" as positive);
- emotions: cue words and phrases of our own (``lexicon.EMOTION_CUES``) mapped to
  GoEmotions labels; a cue preceded by a negator is ignored, a booster raises it; a
  label's intensity is ``score / (score + 1)``;
- mood: from the strongest labels and the sentiment (``_mood``);
- tags: topics of a fixed list (``lexicon.TOPIC_CUES``) the entry mentions, most
  mentioned first;
- summary: extractive, the (at most two) sentences with the strongest feeling, in their
  order: the entry's own words, so its own language;
- safety_flag: crisis phrases (``lexicon.CRISIS``).

English only: other languages get neutral moods and no tags (the summary still works).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import TYPE_CHECKING

from analyze_entry import lexicon
from analyze_entry.schema import EKMAN_OF, Analysis, AnalysisCore, Emotion, clip_summary

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

VADER_VERSION = "3.3.2"
MODEL = f"vader-{VADER_VERSION}+{lexicon.LEXICON_VERSION}"
PROMPT_VERSION = "offline-1"  # the rules below; bump when they change

MAX_EMOTIONS = 6
MAX_TAGS = 5
_BOOST = 1.5

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f\u061f])\s+|\n+")

_EMOTION_WORDS, _EMOTION_PHRASES = lexicon.index(lexicon.EMOTION_CUES)
_TOPIC_WORDS, _TOPIC_PHRASES = lexicon.index(lexicon.TOPIC_CUES)
_LONGEST_PHRASE = max(len(p) for p in (*_EMOTION_PHRASES, *_TOPIC_PHRASES))

_NEGATIVE_EKMAN = ("sadness", "anger", "fear", "disgust")
_MOOD_OF_LABEL = {
    "gratitude": "grateful",
    "optimism": "hopeful", "desire": "hopeful",
    "joy": "joyful", "amusement": "joyful", "excitement": "joyful", "love": "joyful",
    "pride": "joyful", "admiration": "joyful",
    "relief": "content", "caring": "content", "approval": "content",
    "grief": "sad", "sadness": "sad", "disappointment": "sad", "remorse": "sad", "embarrassment": "sad",
    "anger": "angry",
    "annoyance": "frustrated", "disapproval": "frustrated", "disgust": "frustrated",
    "fear": "anxious", "nervousness": "anxious",
}


@cache
def _vader() -> SentimentIntensityAnalyzer:
    """Built once per container (it reads its ~7,500-word lexicon file, ~20 ms)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def analyse(title: str | None, content: str, *, transcripts: list[str] | None = None,
            notes: list[str] | None = None) -> Analysis:
    """``transcripts`` (of the entry's voice notes, made earlier by the provider) are read
    as more of the entry's text."""
    text = "\n\n".join([content, *(transcripts or [])])
    core = analyse_core(title, text)
    return Analysis.of(core, source="offline", model=MODEL, prompt_version=PROMPT_VERSION, notes=notes)


def analyse_core(title: str | None, content: str) -> AnalysisCore:
    body = split_sentences(content)
    sentences = split_sentences(title or "") + body
    vader = _vader()
    compounds = [vader.polarity_scores(s)["compound"] for s in sentences]
    cues = [_scan(s) for s in sentences]

    scores: Counter[str] = Counter()
    topics: Counter[str] = Counter()
    for emotion_scores, topic_counts in cues:
        scores.update(emotion_scores)
        topics.update(topic_counts)
    emotions = [Emotion(label=label, intensity=round(score / (score + 1), 3))
                for label, score in scores.most_common(MAX_EMOTIONS)]
    sentiment = _sentiment(compounds, scores)
    first = len(sentences) - len(body)  # the summary quotes the content, not the title
    return AnalysisCore(
        mood=_mood(emotions, scores, sentiment),
        sentiment=sentiment,
        emotions=emotions,  # an empty list becomes neutral
        tags=[topic for topic, _ in topics.most_common(MAX_TAGS)],
        summary=_summary(body, compounds[first:], cues[first:]),
        safety_flag=any(lexicon.CRISIS.search(s) for s in sentences),
    )


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _scan(sentence: str) -> tuple[Counter[str], Counter[str]]:
    """Emotion scores and topic counts of one sentence."""
    tokens = _WORD.findall(sentence.lower().replace("\u2019", "'"))
    emotions: Counter[str] = Counter()
    topics: Counter[str] = Counter()
    tears = 0.0
    i = 0
    while i < len(tokens):
        span, labels, topic_labels = 1, _EMOTION_WORDS.get(tokens[i], []), _TOPIC_WORDS.get(tokens[i], [])
        for n in range(min(_LONGEST_PHRASE, len(tokens) - i), 1, -1):
            phrase = tuple(tokens[i:i + n])
            if phrase in _EMOTION_PHRASES or phrase in _TOPIC_PHRASES:
                span = n
                labels = _EMOTION_PHRASES.get(phrase, [])
                topic_labels = _TOPIC_PHRASES.get(phrase, [])
                break
        if labels and not _negated(tokens, i):
            weight = _BOOST if i and tokens[i - 1] in lexicon.BOOSTERS else 1.0
            if span == 1 and tokens[i] in lexicon.TEARS:
                tears += weight
            else:
                for label in labels:
                    # weights are floats: Counter adds them, though typeshed types its counts as int
                    emotions[label] += weight  # type: ignore[assignment]
        topics.update(topic_labels)
        i += span
    if tears:
        positive, negative = _polarity(emotions)
        emotions["joy" if positive and not negative else "sadness"] += tears  # type: ignore[assignment]  # as above
    return emotions, topics


def _negated(tokens: list[str], i: int) -> bool:
    window = tokens[max(0, i - lexicon.NEGATION_WINDOW):i]
    for j in range(len(window) - 1, -1, -1):
        if window[j] in lexicon.NEGATION_BREAKERS:
            return False
        if window[j] in lexicon.NEGATORS or window[j].endswith("n't"):
            return True
    return False


def _sentiment(compounds: list[float], scores: Counter[str]) -> float:
    """Mean VADER compound of the sentences that carry sentiment, blended 60/40 with the
    cues' balance (positive - negative) / (positive + negative) when there are cues."""
    felt = [c for c in compounds if c != 0.0]
    vader = sum(felt) / len(felt) if felt else 0.0
    positive, negative = _polarity(scores)
    if not positive + negative:
        return round(vader, 3)
    balance = (positive - negative) / (positive + negative)
    return round(max(-1.0, min(1.0, 0.6 * vader + 0.4 * balance)), 3)


def _polarity(scores: Counter[str]) -> tuple[float, float]:
    """Summed cue scores of the labels under Ekman's joy, and under sadness, anger, fear
    and disgust."""
    positive = sum(v for k, v in scores.items() if EKMAN_OF[k] == "joy")
    negative = sum(v for k, v in scores.items() if EKMAN_OF[k] in _NEGATIVE_EKMAN)
    return positive, negative


def _mood(emotions: list[Emotion], scores: Counter[str], sentiment: float) -> str:
    """The strongest label's mood, with these rules first: grief among the two strongest
    labels is grieving; positive and negative cues both present, and balanced or with a
    flat sentiment, is mixed. A mood whose valence contradicts a clear sentiment becomes
    mixed."""
    if any(e.label == "grief" and e.intensity >= 0.4 for e in emotions[:2]):
        return "grieving"
    positive, negative = _polarity(scores)
    if min(positive, negative) >= 1 and (min(positive, negative) / max(positive, negative) >= 0.5
                                         or abs(sentiment) < 0.2):
        return "mixed"
    mood = _MOOD_OF_LABEL.get(emotions[0].label) if emotions else None
    if mood is None:  # surprise, realization, confusion, curiosity, or no cue at all
        if sentiment >= 0.35:
            return "content"
        if sentiment >= 0.05:
            return "calm"
        return "sad" if sentiment <= -0.35 else "neutral"
    positive_mood = mood in ("joyful", "grateful", "hopeful", "content")
    if (positive_mood and sentiment <= -0.4) or (not positive_mood and sentiment >= 0.4):
        return "mixed"
    return mood


def _summary(sentences: list[str], compounds: list[float],
             cues: list[tuple[Counter[str], Counter[str]]]) -> str:
    """The two sentences with the most feeling (|VADER| + emotion cues), in entry order."""
    if len(sentences) <= 2:
        return clip_summary(" ".join(sentences))
    cue_scores = [sum(c[0].values()) for c in cues]
    ranked = sorted(range(len(sentences)),
                    key=lambda i: (-(abs(compounds[i]) + 0.5 * cue_scores[i]), i))
    return clip_summary(" ".join(sentences[i] for i in sorted(ranked[:2])))
