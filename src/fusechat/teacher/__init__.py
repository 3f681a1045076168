"""The teacher pass: each model scores the shared conversations; its top-k next-token log-probs go to a store."""
