"""Top-k stores: the on-disk format (`format`), the resumable protocol every sharded stage writes one with
(`output`), and the checks that two stores can be read side by side (`pairs`)."""
