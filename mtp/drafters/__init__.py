"""Drafters: anything that proposes tokens for the engine to verify."""
from mtp.drafters.base import Draft, DraftContext, Drafter, TargetFeedback
from mtp.drafters.adaptive import AdaptiveUnionDrafter
from mtp.drafters.combined import LookupFirstDrafter, LookupUnionDrafter
from mtp.drafters.draft_model import DraftModelDrafter
from mtp.drafters.ngram import PromptLookupDrafter, lookup_continuation, lookup_continuations, trie
from mtp.drafters.testing import OracleDrafter, RandomDrafter, StaticTreeTestDrafter

__all__ = [
    "Draft", "DraftContext", "Drafter", "TargetFeedback", "LookupFirstDrafter", "LookupUnionDrafter", "AdaptiveUnionDrafter", "DraftModelDrafter", "PromptLookupDrafter",
    "lookup_continuation", "lookup_continuations", "trie", "OracleDrafter", "RandomDrafter",
    "StaticTreeTestDrafter",
]
