"""Inbound webhook triggers (signature schemes, replay protection) and outbound delivery.

Filled in by the API and notification work; the package exists now so the layout is fixed.
"""
