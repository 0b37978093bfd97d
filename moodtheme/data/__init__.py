"""MTG-Jamendo moodtheme data: split tables, mel-spectrogram datasets, checks, download, synth."""
