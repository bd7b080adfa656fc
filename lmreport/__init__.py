"""lmreport: a re-runnable report on AdaBelief with landscape modification (AdaBelief-LM).

Modules, one concept each: ``config`` (RunConfig, profiles), ``data`` (PTB), ``regularize``
(AWD-LSTM regularisers), ``model`` (AWD-LSTM), ``optim`` (AdaBelief, landscape
modification), ``train`` (the protocol and resumable runs), ``bench`` (speed),
``benchtables`` (the README's tables from bench records), ``cli``.
"""
__version__ = "0.1.0"
