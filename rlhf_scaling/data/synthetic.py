"""A synthetic language for the embedded default study, small enough for a 2-core CPU.

A prompt asks about one topic ("about ocean : wave"). A good response lists distinct words of
that topic, about `natural_length` of them, and stops. Demonstrations (the SFT distribution)
are mostly on-topic with some filler and noise, and their length varies, so in the SFT
distribution a longer response is usually a better one. The gold reward (rlhf_scaling/gold.py)
also penalises repetition and length beyond the natural length, which SFT samples rarely show:
a small proxy RM learns "more on-topic words is better" and misses the penalties, and a policy
optimised against it pads with repeated topic words. That is the overoptimization of Gao et
al. 2022, produced for real rather than simulated.

The vocabulary is closed, so the tokenizer is word-level and built here, nothing downloaded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import List, Tuple

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
PROMPT_WORD, SEPARATOR = "about", ":"
FILLER = ("the", "and", "very", "really", "so", "also", "then", "of")

_TOPICS = {
    "ocean": ("wave", "salt", "tide", "coral", "whale", "reef"),
    "forest": ("tree", "moss", "fern", "owl", "bark", "pine"),
    "city": ("street", "tower", "bus", "market", "bridge", "crowd"),
    "space": ("star", "orbit", "comet", "planet", "moon", "rocket"),
    "kitchen": ("knife", "pan", "bread", "flour", "oven", "spoon"),
    "music": ("drum", "song", "chord", "tempo", "violin", "choir"),
    "winter": ("snow", "ice", "frost", "sled", "scarf", "cold"),
    "garden": ("rose", "soil", "seed", "bee", "hose", "tulip"),
}


@dataclass(frozen=True)
class SyntheticTask:
    """The topics and their words; built from TaskConfig's synthetic fields by `make_task`."""

    topics: Tuple[str, ...]
    topic_words: Tuple[Tuple[str, ...], ...]  # [topic][j]
    natural_length: int
    max_response_tokens: int

    @property
    def vocabulary(self) -> List[str]:
        words = [PAD, EOS, UNK, PROMPT_WORD, SEPARATOR, *FILLER, *self.topics]
        for group in self.topic_words:
            words.extend(group)
        return words

    def topic_of_prompt(self, prompt: str) -> int:
        """Index of the topic a prompt asks about (its second word)."""
        return self.topics.index(prompt.split()[1])


def make_task(n_topics: int, words_per_topic: int, natural_length: int, max_response_tokens: int) -> SyntheticTask:
    """Topics beyond the eight named ones get generated names (`topic9`, `topic9_w0`, ...)."""
    topics, words = [], []
    named = list(_TOPICS.items())
    for t in range(n_topics):
        if t < len(named) and words_per_topic <= len(named[t][1]):
            name, group = named[t][0], named[t][1][:words_per_topic]
        else:
            name = f"topic{t}"
            group = tuple(f"{name}_w{j}" for j in range(words_per_topic))
        topics.append(name)
        words.append(tuple(group))
    return SyntheticTask(tuple(topics), tuple(words), natural_length, max_response_tokens)


def build_tokenizer(task: SyntheticTask) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the closed vocabulary; PAD=0, EOS=1; round-trips with save_pretrained."""
    vocab = {w: i for i, w in enumerate(task.vocabulary)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.padding_side = "right"
    return tok


def sample_prompts(task: SyntheticTask, n: int, rng: random.Random) -> List[str]:
    """n prompts "about <topic> : <hint> <hint>", topic uniform, two distinct hint words of it
    (n_topics x W x (W-1) distinct prompts: 240 by default, so prompt diversity can be varied)."""
    prompts = []
    for _ in range(n):
        t = rng.randrange(len(task.topics))
        hints = rng.sample(task.topic_words[t], 2) if len(task.topic_words[t]) > 1 else list(task.topic_words[t])
        prompts.append(f"{PROMPT_WORD} {task.topics[t]} {SEPARATOR} {' '.join(hints)}")
    return prompts


def sample_demonstration(task: SyntheticTask, prompt: str, rng: random.Random) -> str:
    """One SFT demonstration: distinct on-topic words with a little filler and noise.

    Lengths spread over 1 .. natural_length + 2, so longer demonstrations usually carry more
    distinct on-topic words; repeats and off-topic words are rare, which is what leaves the
    proxy RM blind to them.
    """
    t = task.topic_of_prompt(prompt)
    own = list(task.topic_words[t])
    rng.shuffle(own)
    length = rng.randint(1, task.natural_length + 2)
    words: List[str] = []
    for _ in range(length):
        u = rng.random()
        if u < 0.15:
            words.append(rng.choice(FILLER))
        elif u < 0.22:
            other = rng.randrange(len(task.topics))
            words.append(rng.choice(task.topic_words[other]))
        elif u < 0.27 and words:
            words.append(rng.choice(words))
        elif own:
            words.append(own.pop())
        else:
            words.append(rng.choice(FILLER))
    return " ".join(words)


def sample_demonstrations(task: SyntheticTask, n: int, seed: int) -> Tuple[List[str], List[str]]:
    """n (prompt, demonstration) pairs from a seeded generator."""
    rng = random.Random(seed)
    prompts = sample_prompts(task, n, rng)
    return prompts, [sample_demonstration(task, p, rng) for p in prompts]
