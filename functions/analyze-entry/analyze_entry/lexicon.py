"""The offline analyser's word lists, written for this project (no third-party lexicon is
copied, so there is no licence to honour): English cue words and phrases for each
GoEmotions label, topic words for tags, and crisis phrases for the safety flag.

Format: each label maps to a space-separated list of word forms (no stemming is done,
so inflections are listed); ``_`` joins the words of a phrase (``passed_away``).
Bump ``LEXICON_VERSION`` on any change: it is part of the offline cache key.
"""

from __future__ import annotations

import re

LEXICON_VERSION = "lexicon-1"


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


EMOTION_CUES: dict[str, str] = {
    "admiration": "admire admired admiring admiration impressive impressed inspiring inspired "
                  "brilliant amazing incredible remarkable respect respected look_up_to",
    "amusement": "funny hilarious laugh laughed laughing laughter lol haha hahaha giggle giggled "
                 "giggling amusing amused joke joked joking cracked_up",
    "anger": "angry anger furious fury rage raging livid mad outraged pissed hate hated hating "
             "resent resented resentment infuriating infuriated seething",
    "annoyance": "annoyed annoying annoyance irritated irritating irritation frustrated frustrating "
                 "frustration fed_up sick_of tired_of bothered grumpy",
    "approval": "agree agreed approve approved good_idea fair_enough well_done makes_sense",
    "caring": "care cared caring comfort comforted comforting support supported supporting "
              "hugged hug hugs take_care_of looked_after look_after",
    "confusion": "confused confusing confusion puzzled baffled unsure lost_track no_idea "
                 "don't_understand doesn't_make_sense",
    "curiosity": "curious wonder wondered wondering intrigued fascinated fascinating",
    "desire": "wish wished wishing crave craved craving long_for longing yearn yearning",
    "disappointment": "disappointed disappointing disappointment letdown let_down regretful "
                      "underwhelmed bummed",
    "disapproval": "disapprove disapproved unfair unacceptable wrong_of shouldn't_have",
    "disgust": "disgusted disgusting gross revolting repulsive nauseating sickening vile",
    "embarrassment": "embarrassed embarrassing embarrassment ashamed shame humiliated humiliating "
                     "awkward mortified",
    "excitement": "excited exciting excitement thrilled thrilling can't_wait cannot_wait pumped "
                  "stoked eager",
    "fear": "afraid scared scary fear feared frightened terrified terrifying panic panicked "
            "dread dreading horrified",
    "gratitude": "grateful gratitude thankful thank thanks thanked appreciate appreciated "
                 "appreciative blessed",
    "grief": "grief grieve grieving grieved mourn mourning mourned funeral passed_away "
             "pass_away died death bereaved bereavement widow widowed heartbroken heartbreak "
             "memorial burial buried miss_her miss_him missing_her missing_him",
    "joy": "happy happier happiest happiness joy joyful glad delighted delightful wonderful "
           "fantastic great awesome cheerful elated blissful bliss smile smiled smiling beaming "
           "best_day over_the_moon celebrate celebrated celebrating danced dancing",
    "love": "love loved loving adore adored adoring cherish cherished sweetheart darling",
    "nervousness": "nervous anxious anxiety worried worry worrying worries uneasy tense stressed "
                   "stress stressful overwhelmed restless jittery on_edge",
    "optimism": "hope hoped hopeful hoping optimistic looking_forward confident "
                "better_days brighter",
    "pride": "proud pride accomplished achievement achieved nailed",
    "realization": "realize realized realise realised realizing dawned_on understood "
                   "it_hit_me figured_out",
    "relief": "relieved relief phew finally_over calmer at_ease",
    "remorse": "sorry regret regretted regretting apologize apologized apologise apologised "
               "guilty guilt my_fault",
    "sadness": "sad sadder saddest sadness unhappy cry cries cried crying tears tearful sob "
               "sobbed sobbing depressed depressing depression miserable lonely loneliness "
               "hopeless heartache hurt hurting gloomy devastated feel_down feeling_down "
               "felt_down empty_inside pointless worthless meaningless numb",
    "surprise": "surprised surprising surprise shocked shocking astonished unexpected "
                "unexpectedly wow stunned",
}

#: Words before a cue that cancel it ("not happy"), up to NEGATION_WINDOW tokens back,
#: unless a word that turns the negation around sits in between ("can't stop crying").
NEGATORS = _words(
    "not no never nor neither nobody nothing hardly barely isn't wasn't aren't weren't "
    "don't doesn't didn't can't cannot couldn't won't wouldn't shouldn't haven't hasn't "
    "hadn't ain't"
)
NEGATION_WINDOW = 3
NEGATION_BREAKERS = _words("stop stopped help helped stand wait")

#: Sadness cues that are tears of joy in a sentence whose other cues are all positive
#: ("I was so happy I cried").
TEARS = _words("cry cries cried crying tears tearful sob sobbed sobbing")

#: Intensifiers right before a cue raise its weight.
BOOSTERS = _words(
    "so very really extremely incredibly truly deeply totally completely utterly absolutely "
    "super terribly awfully"
)

TOPIC_CUES: dict[str, str] = {
    "work": "work job office boss meeting meetings deadline deadlines colleague colleagues coworker "
            "coworkers project career shift interview promotion manager",
    "family": "family mom mum mother dad father parents sister brother son daughter kids children "
              "grandma grandmother grandpa grandfather aunt uncle cousin baby",
    "relationship": "partner husband wife boyfriend girlfriend anniversary marriage wedding fiance "
                    "fiancee date_night",
    "friends": "friend friends friendship",
    "health": "health doctor hospital sick illness pain surgery medication diagnosis symptoms",
    "therapy": "therapy therapist counselor counsellor",
    "sleep": "sleep slept sleeping insomnia nap exhausted",
    "exercise": "run ran running gym workout exercise yoga hike hiking swim swimming cycling",
    "food": "dinner lunch breakfast cooking cooked meal recipe restaurant baking baked",
    "money": "money rent bills salary budget debt savings expensive deposit landlord",
    "travel": "trip travel travelled traveled flight vacation holiday airport abroad",
    "home": "home house apartment moving chores garden cleaning",
    "school": "school class exam exams homework study studying university college teacher grades",
    "loss": "funeral died death passed_away memorial burial",
    "pets": "dog dogs cat cats puppy kitten pet",
    "nature": "beach park forest ocean sea mountains sunset sunrise",
    "creativity": "painting writing music guitar piano drawing singing",
}

#: Self-harm and crisis language (English). Flagged even when negated: the flag asks for
#: a human look, and "I would never hurt myself" is worth one.
CRISIS = re.compile(
    r"\b(?:kill(?:ing)?\s+myself|end(?:ing)?\s+(?:my\s+life|it\s+all)|suicid\w*"
    r"|want(?:ed)?\s+to\s+die|wish\s+i\s+(?:was|were)\s+dead|better\s+off\s+dead"
    r"|self[-\s]?harm\w*|(?:hurt|hurting|cut|cutting|harm|harming)\s+myself"
    r"|no\s+reason\s+to\s+(?:live|go\s+on)|don'?t\s+want\s+to\s+(?:live|be\s+here)"
    r"|take\s+my\s+(?:own\s+)?life|overdos\w*)\b",
    re.IGNORECASE,
)


def index(cues: dict[str, str]) -> tuple[dict[str, list[str]], dict[tuple[str, ...], list[str]]]:
    """``{word: [labels]}`` and ``{phrase tokens: [labels]}`` from a cue table."""
    words: dict[str, list[str]] = {}
    phrases: dict[tuple[str, ...], list[str]] = {}
    for label, forms in cues.items():
        for form in forms.split():
            if "_" in form:
                phrases.setdefault(tuple(form.split("_")), []).append(label)
            else:
                words.setdefault(form, []).append(label)
    return words, phrases
