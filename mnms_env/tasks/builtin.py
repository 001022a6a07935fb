"""Built-in tasks whose data ships inside installed packages, so they run offline on a fresh
machine.

Language identification (`langid-<lang>`, Wong & Gesmundo 2017): the pool is the union of the
`wordfreq.top_n_list(lang, 5000)` lists of English, Spanish, German and Japanese, plus the
target language's list when it is not one of those four. **Rule for shared tokens:** each
distinct token appears once (first occurrence in the order en, es, de, ja, target), and it is
positive iff it is in the target language's list; so `langid-es` has exactly 5,000 positives
and a token such as "de" (in es and de) is positive for `langid-es` and `langid-de` alike.
The lists come from the installed wordfreq data; `Task.fingerprint` changes if they do.

Word sentiment (`word-sentiment-en`, `word-sentiment-da`): the AFINN lexicons shipped with the
`afinn` package (`AFINN-en-165.txt`, `AFINN-da-32.txt`; UTF-8, one `word<TAB>score` a line,
some entries are short phrases). AFINN rather than VADER for English so both languages share
one annotation scheme (integer valence -5..5) for transfer experiments. Label = sign of the
valence; the words with valence 0 (two in English, none in Danish) are dropped.

`digits`, `wine`, `breast-cancer`: scikit-learn's bundled copies, raw float32 features (the
featurizer standardises them, fitted on train only).

Every task is cut by `task_from_arrays` into a stratified 80/10/10 split fixed by the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from importlib.resources import files

import numpy as np

from mnms_env.tasks.base import Task, task_from_arrays

PAPER_LANGUAGES = ("en", "es", "de", "ja")
LANGID_TARGETS = ("es", "de", "fr", "pt", "it", "nl", "sv", "pl")
VOCABULARY = 5000
AFINN_FILES = {"en": "AFINN-en-165.txt", "da": "AFINN-da-32.txt"}
SKLEARN_LOADERS = {
    "digits": "load_digits",
    "wine": "load_wine",
    "breast-cancer": "load_breast_cancer",
}


def langid(target: str, seed: int) -> Task:
    """`langid-<target>`: is this frequent token from the target language? Classes
    `("other", target)`."""
    languages = PAPER_LANGUAGES + (() if target in PAPER_LANGUAGES else (target,))
    import wordfreq  # imported here: only langid tasks need it

    pool = dict.fromkeys(t for lang in languages for t in wordfreq.top_n_list(lang, VOCABULARY))
    positive = set(wordfreq.top_n_list(target, VOCABULARY))
    tokens = np.array(list(pool), dtype=object)
    labels = [int(token in positive) for token in pool]
    task = task_from_arrays(
        f"langid-{target}", "text", tokens, labels, seed=seed, source="wordfreq"
    )
    return replace(task, classes=("other", target))


def word_sentiment(language: str, seed: int) -> Task:
    """`word-sentiment-<language>`: is this lexicon entry's valence negative or positive?"""
    lexicon = files("afinn") / "data" / AFINN_FILES[language]
    words, labels = [], []
    for line in lexicon.read_text(encoding="utf-8").splitlines():
        word, score = line.rsplit("\t", 1)
        if int(score) != 0:
            words.append(word)
            labels.append("positive" if int(score) > 0 else "negative")
    return task_from_arrays(
        f"word-sentiment-{language}",
        "text",
        np.array(words, dtype=object),
        labels,
        seed=seed,
        source="afinn",
    )


def sklearn_task(name: str, seed: int) -> Task:
    """A scikit-learn toy dataset; class names from its `target_names`."""
    from sklearn import datasets  # imported here: sklearn.datasets takes ~1 s to import

    bunch = getattr(datasets, SKLEARN_LOADERS[name])()
    x = np.asarray(bunch.data, dtype=np.float32)
    task = task_from_arrays(
        name, "tabular", x, bunch.target.tolist(), seed=seed, source="scikit-learn"
    )
    return replace(task, classes=tuple(str(c) for c in bunch.target_names))


BUILTIN: dict[str, Callable[[int], Task]] = {
    **{f"langid-{t}": partial(langid, t) for t in LANGID_TARGETS},
    **{f"word-sentiment-{lang}": partial(word_sentiment, lang) for lang in AFINN_FILES},
    **{name: partial(sklearn_task, name) for name in SKLEARN_LOADERS},
}
"""Built-in task names and their builders `(seed) -> Task`."""
