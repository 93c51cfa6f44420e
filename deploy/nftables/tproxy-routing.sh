#!/bin/sh
# Policy routing required by deploy/nftables/icpgate-tproxy.nft.
#
# Packets marked 0x1 by the nftables prerouting chain must be delivered to
# the local stack even though their destination address is not local; a
# "local" default route in a dedicated table does that:
#
#   ip    rule  add fwmark 0x1 lookup 100
#   ip    route add local 0.0.0.0/0 dev lo table 100
#   ip -6 rule  add fwmark 0x1 lookup 100
#   ip -6 route add local ::/0 dev lo table 100
#
# Idempotent: safe to run at every boot / from a oneshot unit before
# icpgate.service (e.g. ExecStartPre= of a network unit). `down` removes it.
#
# Environment overrides: ICPGATE_TPROXY_MARK (default 0x1),
# ICPGATE_TPROXY_TABLE (default 100), ICPGATE_TPROXY_PRIO (default 100).
set -eu

MARK="${ICPGATE_TPROXY_MARK:-0x1}"
TABLE="${ICPGATE_TPROXY_TABLE:-100}"
PRIO="${ICPGATE_TPROXY_PRIO:-100}"

# `ip rule add` is not idempotent (it adds duplicates), so test first.
# The match is on "fwmark <mark>" followed by "lookup <table>" in the
# rule listing.
has_rule() { # $1 = -4|-6
	ip "$1" rule show priority "$PRIO" 2>/dev/null |
		grep -Eq "fwmark ${MARK}(/[0-9a-fx]+)? lookup ${TABLE}( |\$)"
}

up() {
	for fam in -4 -6; do
		if [ "$fam" = -4 ]; then dst=0.0.0.0/0; else dst=::/0; fi
		if has_rule "$fam"; then
			echo "rule $fam fwmark $MARK lookup $TABLE: present"
		else
			ip "$fam" rule add priority "$PRIO" fwmark "$MARK" lookup "$TABLE"
			echo "rule $fam fwmark $MARK lookup $TABLE: added"
		fi
		# `replace` is idempotent for routes.
		ip "$fam" route replace local "$dst" dev lo table "$TABLE"
		echo "route $fam local $dst dev lo table $TABLE: ok"
	done
}

down() {
	for fam in -4 -6; do
		if [ "$fam" = -4 ]; then dst=0.0.0.0/0; else dst=::/0; fi
		while has_rule "$fam"; do
			ip "$fam" rule del priority "$PRIO" fwmark "$MARK" lookup "$TABLE"
		done
		ip "$fam" route del local "$dst" dev lo table "$TABLE" 2>/dev/null || true
		echo "$fam: removed"
	done
}

case "${1:-up}" in
	up) up ;;
	down) down ;;
	status)
		for fam in -4 -6; do
			ip "$fam" rule show priority "$PRIO"
			ip "$fam" route show table "$TABLE"
		done
		;;
	*) echo "usage: $0 [up|down|status]" >&2; exit 2 ;;
esac
