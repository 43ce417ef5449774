"""Gold rewards: the stand-in for human judgement. One interface, two implementations.

`score(prompts, responses) -> Tensor (B,)` of floats, one per (prompt, response) pair.
- `SyntheticGold`: programmatic, for the synthetic task (rlhf_scaling/data/synthetic.py).
- `ModelGold`: any sequence-classification reward model with one output, from a hub id or a local dir.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from rlhf_scaling.data.synthetic import FILLER, SyntheticTask


class SyntheticGold:
    """Gold reward of the synthetic task (units: "gold points", roughly 0 .. words_per_topic).

    gold = distinct on-topic words
           - 1.0 x repeated words           (any word said again)
           - 0.5 x off-topic words          (words of another topic)
           - 0.25 x filler words beyond one
           - 0.5 x words beyond natural_length
           - 1.0 if the response hit the token budget without ending
           - 0.01 x length                  (breaks most ties toward the shorter answer)

    A proxy trained on SFT samples mostly sees the first term, since the penalties are rare there.
    """

    def __init__(self, task: SyntheticTask):
        self.task = task
        self._topic_sets = [set(words) for words in task.topic_words]
        self._all_topic_words = set().union(*self._topic_sets)

    def score_one(self, prompt: str, response: str, ended: bool = True) -> float:
        words = response.split()
        own = self._topic_sets[self.task.topic_of_prompt(prompt)]
        distinct_on = len({w for w in words if w in own})
        repeats = len(words) - len(set(words))
        off_topic = sum(1 for w in words if w in self._all_topic_words and w not in own)
        filler = sum(1 for w in words if w in FILLER)
        excess = max(0, len(words) - self.task.natural_length)
        unfinished = 0 if ended and len(words) < self.task.max_response_tokens else 1
        return (
            distinct_on
            - 1.0 * repeats
            - 0.5 * off_topic
            - 0.25 * max(0, filler - 1)
            - 0.5 * excess
            - 1.0 * unfinished
            - 0.01 * len(words)
        )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(B,) float32 gold scores. A response of max_response_tokens words counts as unfinished."""
        if len(prompts) != len(responses):
            raise ValueError(f"gold.score: {len(prompts)} prompts but {len(responses)} responses")
        return torch.tensor([self.score_one(p, r) for p, r in zip(prompts, responses)], dtype=torch.float32)


class ModelGold:
    """A sequence-classification RM (num_labels=1) as gold, e.g. a large RM from the hub or a local dir."""

    def __init__(self, name_or_path: str, *, batch_size: int = 64, device: str = "cpu",
                 trust_remote_code: bool = False, max_length: int = 1024):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            name_or_path, num_labels=1, trust_remote_code=trust_remote_code, use_safetensors=True
        ).to(device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.device, self.max_length = batch_size, device, max_length

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """(B,) float32 scores: the model's single logit for prompt + response."""
        if len(prompts) != len(responses):
            raise ValueError(f"gold.score: {len(prompts)} prompts but {len(responses)} responses")
        out: List[torch.Tensor] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [p + " " + r for p, r in zip(prompts[i:i + self.batch_size], responses[i:i + self.batch_size])]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
            logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
            out.append(logits[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0)
