"""A release's documentation, written from its spec and status (pure: no client, no kopf).

- consistency: what is wrong with a release's own inputs (flagged in the card and in status)
- history:     a serving target's releases as the card's update-history table (or JSON)
- card:        the Hugging Face model card of one release
"""
