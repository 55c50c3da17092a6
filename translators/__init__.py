"""Pure translators between the OpenAI chat-completions wire format and each provider's format.

Nothing in this package does I/O, reads the clock or mints ids: the proxy passes those in
(:class:`translators.base.ResponseMeta`), which keeps every translator deterministic and testable
without an event loop.
"""
