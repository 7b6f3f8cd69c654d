"""The systemd unit files (the only copy), packaged as `fleet.systemd` for `fleet agent|controller install`."""
