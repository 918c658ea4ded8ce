"""absl flag groups. Each app imports the groups it reads (and adopts them as its key
flags, so `--help` lists them); each group turns its flags into a frozen library
config. Library code never reads FLAGS."""
