# bench/training_args.sh — sourced by the bench scripts: the training options of their HCLD runs.
# CONFIG (cpu: the default, on the shipped autoencoder); EPOCHS_AE and EPOCHS_LDM (empty: the
# configuration's default training; set, they are passed as --epochs-ae / --epochs-ldm, which
# lifts the `cpu` preset's step budget). Sets the array TRAINING.
CONFIG=${CONFIG:-cpu}
EPOCHS_AE=${EPOCHS_AE:-}
EPOCHS_LDM=${EPOCHS_LDM:-}
TRAINING=(--config "$CONFIG")
if [ -n "$EPOCHS_AE" ]; then TRAINING+=(--epochs-ae "$EPOCHS_AE"); fi
if [ -n "$EPOCHS_LDM" ]; then TRAINING+=(--epochs-ldm "$EPOCHS_LDM"); fi
