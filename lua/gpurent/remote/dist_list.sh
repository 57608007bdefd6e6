# shellcheck shell=sh
# "dist NAME-VERSION" for each installed dist-info of NAMES (one a line) in PREFIX's
# site-packages (gotchas.dist_script, for custom probes; the built-in ones include
# dist_lib.sh themselves).
# gpurent-include: dist_lib.sh
dists @PREFIX@ @NAMES@
