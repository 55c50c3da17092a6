"""Routing around the providers: backoff, circuit breakers, capabilities, upstream health and
the live config (reload). :mod:`proxy.router` is the one caller of these per request."""
