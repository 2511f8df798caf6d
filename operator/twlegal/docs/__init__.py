"""A release's documentation, written from its spec and status (pure: no client, no kopf).

- history:     a serving target's releases as the card's update-history table (or JSON)
- card:        the Hugging Face model card of one release (with the findings of policies/consistency)
"""
