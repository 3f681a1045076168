"""Training the pivot on fused targets (`api.train`) into a plain Hugging Face checkpoint."""

# `fusechat.train(...)` calls fusechat.train.api.train: the package is callable (fusechat/_stage_package.py).
from fusechat._stage_package import make_callable  # noqa: E402

make_callable(__name__, "fusechat.train.api", "train")
