"""Sentence corpus for the household assistant domain (ARCHITECTURE.md, "The speech domain").

Sentences come from the phrasings in `lexicon/templates.txt` filled with slot values from the
other word lists in `lexicon/` (corpus_lexicon.py reads them, corpus_slots.py fills the slots,
corpus_person_names.py splits the person names). The splits are built so that evaluation
measures what matters:

- train: distinct sentences over the training names, devices and other slot values.
- dev, test_sentences: sentences never seen in train, over the same slot values.
- test_names: call and message requests with held-out person names, whose words never occur in
  train or dev; only the biasing context can teach the model those names.

Every dev/test utterance carries a biasing `context` of about 30 display-form entries.
`python -m edge_asr.models.corpus --out DIR` writes the splits as JSON Lines.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from edge_asr.models.corpus_lexicon import (
    INTENT_WEIGHTS,
    INTENTS,
    Lexicon,
    Template,
    load_lexicon,
)
from edge_asr.models.corpus_person_names import ContactPool, split_names
from edge_asr.models.corpus_slots import (
    CONTACT_SLOT,
    DEVICE_SLOTS,
    LIST_SLOTS,
    SPOKEN_FILLERS,
    Filled,
)

CONTEXT_SIZE = 30
CONTEXT_DEVICES_TEST_NAMES = 5  # devices in a test_names context; the rest are held-out names
CONTEXT_DEVICES_SENTENCES = 10  # devices in a dev/test_sentences context
PREFIX_PROB = 0.3
SUFFIX_PROB = 0.12
MAX_WORDS = 15


@dataclass(frozen=True)
class Utterance:
    text: str  # normalised with daemon.text.normalize_text
    intent: str  # one of INTENTS
    entities: tuple[str, ...]  # contact / device names in it, display form
    pause_after: tuple[int, ...]  # word indices after which a speaker naturally pauses
    context: tuple[str, ...] = ()  # biasing list for evaluation; empty for train
    tags: tuple[str, ...] = ()  # e.g. ("contact",), ("digits",), ("device",)


@dataclass
class CorpusSplits:
    train: list[Utterance]
    dev: list[Utterance]
    test_sentences: list[Utterance]
    test_names: list[Utterance]
    train_names: list[str]  # display-form person names the train split draws from
    heldout_names: list[str]  # display-form person names only test_names uses


# ---------------------------------------------------------------- sentences

class SentenceGenerator:
    """Random utterances for one contact pool; `sample` keeps them distinct."""

    def __init__(self, lex: Lexicon, contacts: ContactPool,
                 intents: Sequence[str] = INTENTS) -> None:
        self._lex = lex
        self._contacts = contacts
        self._intents = list(intents)
        self._weights = [INTENT_WEIGHTS[i] for i in self._intents]
        self._templates = {i: lex.templates_for(i) for i in self._intents}

    def _fill(self, slot: str, rng: random.Random, used: dict[str, tuple[str, ...]]) -> Filled:
        if slot == CONTACT_SLOT:
            return self._contacts.pick(rng)
        if slot in DEVICE_SLOTS:
            device = rng.choice([p for s in DEVICE_SLOTS[slot] for p in self._lex.devices[s]])
            return Filled(device.words, entity=device.display, tag="device")
        if slot in SPOKEN_FILLERS:
            return SPOKEN_FILLERS[slot](rng)
        values = self._lex.lists[LIST_SLOTS[slot]]
        value = rng.choice(values)
        # "add {item} and {item2}" wants two different things.
        while slot == "item2" and value.words == used.get("item") and len(values) > 1:
            value = rng.choice(values)
        return Filled(value.words)

    def render(self, template: Template, rng: random.Random) -> Utterance:
        words: list[str] = []
        pauses: list[int] = []
        entities: list[str] = []
        tags = dict.fromkeys(template.tags)
        used: dict[str, tuple[str, ...]] = {}
        if rng.random() < PREFIX_PROB:
            words.extend(rng.choice(self._lex.prefixes_command if template.command
                                    else self._lex.prefixes_any))
        for piece in template.pieces:
            if isinstance(piece, tuple):
                words.extend(piece)
                continue
            filled = self._fill(piece, rng, used)
            used[piece] = filled.words
            if filled.tag == "contact" and words:
                pauses.append(len(words) - 1)  # people hesitate before a name
            pauses.extend(len(words) + p for p in filled.pauses)
            words.extend(filled.words)
            if filled.entity:
                entities.append(filled.entity)
            if filled.tag:
                tags[filled.tag] = None
        if template.command and rng.random() < SUFFIX_PROB:
            suffix = rng.choice(self._lex.suffixes)
            if "please" not in words or "please" not in suffix:  # one "please" is enough
                words.extend(suffix)
        return Utterance(" ".join(words), template.intent, tuple(dict.fromkeys(entities)),
                         tuple(sorted(set(pauses))), tags=tuple(tags))

    def random_utterance(self, rng: random.Random, intent: str | None = None) -> Utterance:
        if intent is None:
            intent = rng.choices(self._intents, weights=self._weights)[0]
        return self.render(rng.choice(self._templates[intent]), rng)

    def _draw(self, n: int, rng: random.Random, exclude: set[str], attempts: int,
              intent: str | None = None) -> list[Utterance]:
        """Up to n new distinct utterances within `attempts` tries; `exclude` grows with them."""
        out: list[Utterance] = []
        for _ in range(attempts):
            if len(out) == n:
                break
            utt = self.random_utterance(rng, intent)
            if utt.text in exclude or len(utt.text.split()) > MAX_WORDS:
                continue
            exclude.add(utt.text)
            out.append(utt)
        return out

    def sample(self, n: int, rng: random.Random, exclude: set[str]) -> list[Utterance]:
        """n distinct utterances not in `exclude`, shuffled, intents in INTENT_WEIGHTS' mix.

        An intent with few possible sentences (conversation control) stops early rather than
        filling its share with odd opener and closer combinations; others make up the rest.
        """
        total = sum(self._weights)
        quotas = [int(n * w / total) for w in self._weights]
        for i in range(n - sum(quotas)):
            quotas[i % len(quotas)] += 1
        out: list[Utterance] = []
        for intent, quota in zip(self._intents, quotas, strict=True):
            out += self._draw(quota, rng, exclude, 4 * quota + 200, intent)
        missing = n - len(out)
        out += self._draw(missing, rng, exclude, 30 * missing + 10_000)
        if len(out) < n:
            raise RuntimeError(f"only {len(out)} of {n} distinct sentences could be made")
        rng.shuffle(out)
        return out


def _with_context(utts: list[Utterance], rng: random.Random, names: Sequence[str],
                  devices: Sequence[str], n_devices: int, extra_tags: tuple[str, ...] = (),
                  ) -> list[Utterance]:
    """Each utterance gets its own entities plus random held-out names and devices, ~30 in all."""
    out = []
    for u in utts:
        own = list(u.entities)
        others_devices = [d for d in rng.sample(devices, n_devices + len(own)) if d not in own]
        n_names = CONTEXT_SIZE - len(own) - n_devices
        others_names = [p for p in rng.sample(names, n_names + len(own)) if p not in own]
        context = own + others_devices[:n_devices] + others_names[:n_names]
        rng.shuffle(context)
        out.append(Utterance(u.text, u.intent, u.entities, u.pause_after, tuple(context),
                             u.tags + extra_tags))
    return out


def build_corpus(seed: int = 0, n_train: int = 40000, n_dev: int = 400,
                 n_test_sentences: int = 500, n_test_names: int = 400) -> CorpusSplits:
    """All four splits, deterministic for a seed."""
    lex = load_lexicon()
    names = split_names(lex, random.Random(f"{seed}:names"))
    train_gen = SentenceGenerator(lex, names.train)
    names_gen = SentenceGenerator(lex, names.heldout, intents=("call",))
    seen: set[str] = set()
    train = train_gen.sample(n_train, random.Random(f"{seed}:train"), seen)
    dev = train_gen.sample(n_dev, random.Random(f"{seed}:dev"), seen)
    test_sentences = train_gen.sample(n_test_sentences, random.Random(f"{seed}:test"), seen)
    test_names = names_gen.sample(n_test_names, random.Random(f"{seed}:names_test"), seen)
    _check_heldout_absent([*train, *dev], names.heldout_words)

    heldout_names = names.heldout.person_names
    devices = [p.display for p in lex.device_names]
    ctx_rng = random.Random(f"{seed}:context")
    return CorpusSplits(
        train=train,
        dev=_with_context(dev, ctx_rng, heldout_names, devices, CONTEXT_DEVICES_SENTENCES),
        test_sentences=_with_context(test_sentences, ctx_rng, heldout_names, devices,
                                     CONTEXT_DEVICES_SENTENCES),
        test_names=_with_context(test_names, ctx_rng, heldout_names, devices,
                                 CONTEXT_DEVICES_TEST_NAMES, extra_tags=("heldout_name",)),
        train_names=names.train.person_names,
        heldout_names=heldout_names,
    )


def _check_heldout_absent(utts: Iterable[Utterance], heldout_words: frozenset[str]) -> None:
    for u in utts:
        if leaked := heldout_words.intersection(u.text.split()):
            raise AssertionError(f"held-out name words {sorted(leaked)} in {u.text!r}")


# ---------------------------------------------------------------- output

SPLIT_FILES = ("train", "dev", "test_sentences", "test_names")


def write_corpus(splits: CorpusSplits, out_dir: Path) -> None:
    """One JSON Lines file per split plus the two name lists, UTF-8."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SPLIT_FILES:
        with (out_dir / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for utt in getattr(splits, name):
                f.write(json.dumps(asdict(utt), ensure_ascii=False) + "\n")
    for name, values in (("names_train", splits.train_names),
                         ("names_heldout", splits.heldout_names)):
        (out_dir / f"{name}.txt").write_text("".join(v + "\n" for v in values), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the sentence corpus of the domain.")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=40000)
    parser.add_argument("--n-dev", type=int, default=400)
    parser.add_argument("--n-test-sentences", type=int, default=500)
    parser.add_argument("--n-test-names", type=int, default=400)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    splits = build_corpus(args.seed, args.n_train, args.n_dev, args.n_test_sentences,
                          args.n_test_names)
    write_corpus(splits, args.out)
    for name in SPLIT_FILES:
        utts = getattr(splits, name)
        mix = Counter(u.intent for u in utts)
        top = ", ".join(f"{k} {v}" for k, v in mix.most_common())
        print(f"{name}: {len(utts)} utterances ({top})")
    print(f"names: {len(splits.train_names)} train, {len(splits.heldout_names)} held out; "
          f"{time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
