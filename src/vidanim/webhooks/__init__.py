"""Deliveries providers push to us (fal's webhooks), verified before anything believes them."""
