#!/bin/bash
# Vast.ai onstart script. Rendered by jitplan.cloud.provision.render_onstart (string.Template:
# ${run_id}, ${env_pattern}) and sent as the instance's `onstart` (Vast runs it at every container start).
# Keep it short: Vast caps onstart + args at 4096 characters. No secrets are rendered into it.
touch ~/.no_auto_tmux  # Vast attaches tmux on SSH login otherwise
# Vast passes -e variables to onstart but not to SSH sessions (vast.md §3.10): persist ours.
env | grep -E '^(${env_pattern})=' >> /etc/environment || true
# Fallback for the SSH key (SkyPilot #6514: keys not always installed): the public key travels in the env.
if [ -n "$$JITPLAN_SSH_PUBKEY" ]; then
  mkdir -p ~/.ssh && chmod 700 ~/.ssh
  grep -qxF "$$JITPLAN_SSH_PUBKEY" ~/.ssh/authorized_keys 2>/dev/null || echo "$$JITPLAN_SSH_PUBKEY" >> ~/.ssh/authorized_keys
  chmod 600 ~/.ssh/authorized_keys
fi
mkdir -p /workspace/jitplan/${run_id} && date -u +%FT%TZ > /workspace/jitplan/${run_id}/.onstart-done
