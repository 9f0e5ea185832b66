"""The review desk: what ``domainkit review`` and the review page work with.

``ReviewDesk`` lists the exchanges waiting for review (a thumbs down first, then those the
gate was least sure of), searches the documents for the line that answers, records
verdicts (``feedback.review``) and lists reviewed lines that the documents no longer hold.
The page's HTTP routes are ``runtime.review_page``.
"""

from __future__ import annotations

from functools import cached_property

from domainkit.answer.retrieve import follows, search_query
from domainkit.config.evalset import question_key
from domainkit.config.loading import Domain
from domainkit.feedback.log import ConversationLog
from domainkit.feedback.review import (
    Verdict,
    record_verdict,
    reviewed_questions,
    search_lines,
    stale_reviews,
)


class ReviewDesk:
    """A domain's conversation log and passages, for reviewing.

    Args:
        domain: The domain (its ``validation.yaml`` receives the verdicts).
        log: Its conversation log.
        retriever: Its retriever for the document search; opened when first needed.
    """

    def __init__(self, domain: Domain, log: ConversationLog, retriever=None):
        self.domain, self.log = domain, log
        self._retriever = retriever

    @cached_property
    def chunks(self) -> list:
        from domainkit.retrieval import load_index

        if self._retriever is not None and hasattr(self._retriever, "index"):
            return list(self._retriever.index.chunks)
        return list(load_index(self.domain.index_dir).chunks)

    @property
    def retriever(self):
        if self._retriever is None:
            from domainkit.retrieval import open_retriever

            self._retriever = open_retriever(self.domain)
        return self._retriever

    def pending(self, limit: int = 100) -> list[dict]:
        """The exchanges waiting for review, in review order, a question asked many times
        once (``asked``, and the other exchanges' ids in ``same_question``). A question
        with a verdict is not listed again unless a user disliked an answer to it; a
        short follow-up is the question as the runtime searched for it, with the one it
        follows (``follows``), as its verdict is written (``feedback.review.question_of``)."""
        decided = {question_key(q["question"]) for q in reviewed_questions(self.domain)}
        groups: dict[str, dict] = {}
        for exchange in self.log.pending(limit=1 << 30):
            key = question_key(search_query(exchange.question, exchange.history))
            if key in decided and exchange.rating != "down":
                continue
            if key in groups:
                groups[key]["same_question"].append(exchange.id)
                groups[key]["asked"] += 1
            else:
                groups[key] = {
                    **exchange.to_dict(),
                    "asked": 1,
                    "same_question": [],
                    "follows": follows(exchange.question, exchange.history),
                }
        return list(groups.values())[:limit]

    def mark(self, verdict: Verdict) -> dict:
        return record_verdict(self.domain, self.log, verdict, self.chunks)

    def search(self, query: str) -> list[dict]:
        return search_lines(self.retriever, query)

    def stale(self) -> list[dict]:
        return stale_reviews(self.domain, self.chunks)
