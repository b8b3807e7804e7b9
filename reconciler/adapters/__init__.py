"""Side effects: subprocess, git, Redfish, SSH, the artifact store, state files."""
