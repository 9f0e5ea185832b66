"""How an answer is made. Read the modules in this order:

1. ``retrieve``: the question of a conversation's turn and the passages searched for it;
2. ``evidence``: the sentences of those passages that bear on the question, each citable;
3. ``read``: the tuned model reads the evidence, picks its line or leans to refusing;
4. ``verify``: a generated quote must reproduce an evidence line, figures and names too;
5. ``compose``: the answer a user reads, worded from the documents' own lines, cited;
6. ``gate``: answer, or refuse when the evidence does not answer the question;
7. ``memory``: a question that repeats a reviewed one gets the reviewer's line or refusal;
8. ``assistant``: the path above in one place, with the comparison policies.

``answers`` holds what the path gives back (``Answer``, ``Source``), ``budget`` fits a
conversation into the model's context, ``answer_types`` and ``refusal`` are the small
language facts the path shares with eval; ``prior.json`` is the gate's prior, fitted by
``bench/fit_prior.py``.

Import from the modules themselves (``from domainkit.answer.assistant import Assistant``):
this package's own file stays empty, so a stage that uses one module (synth uses
``evidence`` and ``compose``) is not rebuilt when another changes.
"""
