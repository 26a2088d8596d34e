"""BlazeStyleGAN compression and export pipeline: the library behind the DVC stages in
``stages/``."""
