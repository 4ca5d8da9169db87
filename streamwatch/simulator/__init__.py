"""A simulated LLM upstream speaking OpenAI Chat Completions, OpenAI Responses and Anthropic Messages.

`scenario` builds the exact bytes and timing of one response without I/O; `server` serves them over
real sockets, with behaviours drawn from a `Profile` or scripted per request with `x-sim-*` headers.
"""
