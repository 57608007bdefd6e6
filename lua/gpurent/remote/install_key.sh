# shellcheck shell=sh
# Like ssh-copy-id (phases/setup.lua install_key): append the public key read from
# stdin to ~/.ssh/authorized_keys once, with the right modes. Prints present|added.
umask 077; mkdir -p ~/.ssh && touch ~/.ssh/authorized_keys && IFS= read -r k &&
if grep -qxF -- "$k" ~/.ssh/authorized_keys; then echo present; else printf '%s\n' "$k" >> ~/.ssh/authorized_keys && echo added; fi
