# The host settings Moldau wants, shared by check.sh and apply.sh. Sourced, not run.
# Each setting is a function that sets NAME, CURRENT (the value found, or "unavailable"),
# ADVISED, CMP (eq | ge | le | in:a,b) and APPLY (the command that would set ADVISED).
# shellcheck shell=bash

# Data directory whose block device gets the disk advice (override with MOLDAU_DATA_DIR).
DATA_DIR=${MOLDAU_DATA_DIR:-./moldau-data}

data_device() {
  local dir=$DATA_DIR dev
  [[ -e $dir ]] || dir=$(dirname "$dir")
  dev=$(df --output=source "$dir" 2>/dev/null | tail -1)
  dev=${dev#/dev/}
  # A partition (vda1, nvme0n1p2) takes its queue settings from its disk.
  if [[ -e /sys/class/block/$dev/partition ]]; then
    dev=$(basename "$(readlink -f "/sys/class/block/$dev/..")")
  fi
  echo "$dev"
}

sysctl_get() { sysctl -n "$1" 2>/dev/null | awk "{print \$${2:-1}}" || true; }
bracketed() { sed -n 's/.*\[\(.*\)\].*/\1/p' "$1" 2>/dev/null; }
or_unavailable() { [[ -n $1 ]] && echo "$1" || echo unavailable; }

sysctl_setting() { # key advised cmp [field]
  NAME=$1; ADVISED=$2; CMP=$3
  CURRENT=$(or_unavailable "$(sysctl_get "$1" "${4:-1}")")
  APPLY="sysctl -w $1=$2"
}

s_swappiness() { sysctl_setting vm.swappiness 1 le; }
s_somaxconn() { sysctl_setting net.core.somaxconn 4096 ge; }
s_rmem_max() { sysctl_setting net.core.rmem_max 16777216 ge; }
s_wmem_max() { sysctl_setting net.core.wmem_max 16777216 ge; }
s_tcp_rmem() { sysctl_setting net.ipv4.tcp_rmem 16777216 ge 3; NAME="net.ipv4.tcp_rmem (max)"; APPLY="sysctl -w net.ipv4.tcp_rmem='4096 131072 16777216'"; }
s_tcp_wmem() { sysctl_setting net.ipv4.tcp_wmem 16777216 ge 3; NAME="net.ipv4.tcp_wmem (max)"; APPLY="sysctl -w net.ipv4.tcp_wmem='4096 65536 16777216'"; }
s_syn_backlog() { sysctl_setting net.ipv4.tcp_max_syn_backlog 4096 ge; }
s_io_uring() { sysctl_setting kernel.io_uring_disabled 0 eq; [[ $CURRENT == unavailable ]] && CURRENT=0; }
s_file_max() { sysctl_setting fs.file-max 1048576 ge; }
s_governor() {
  NAME="cpu frequency governor"; ADVISED=performance; CMP=eq
  CURRENT=$(or_unavailable "$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null)")
  APPLY='for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do echo performance > "$g"; done'
}
s_thp() {
  NAME="transparent huge pages"; ADVISED=madvise; CMP=in:madvise,never
  CURRENT=$(or_unavailable "$(bracketed /sys/kernel/mm/transparent_hugepage/enabled)")
  APPLY="echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"
}
s_scheduler() {
  local dev; dev=$(data_device)
  NAME="disk scheduler ($dev)"; ADVISED=none; CMP=in:none,mq-deadline
  CURRENT=$(or_unavailable "$(bracketed "/sys/block/$dev/queue/scheduler")")
  APPLY="echo none > /sys/block/$dev/queue/scheduler"
}
s_read_ahead() {
  local dev; dev=$(data_device)
  NAME="disk read-ahead KiB ($dev)"; ADVISED=128; CMP=le
  CURRENT=$(or_unavailable "$(cat "/sys/block/$dev/queue/read_ahead_kb" 2>/dev/null)")
  APPLY="echo 128 > /sys/block/$dev/queue/read_ahead_kb"
}
s_discard() {
  # Online discard trims freed blocks inside the journal commit, so every segment that retention
  # unlinks stalls the fdatasyncs of all partitions on that filesystem. Trim periodically instead.
  local dir=$DATA_DIR opts
  [[ -e $dir ]] || dir=$(dirname "$dir")
  NAME="online discard ($(df --output=target "$dir" 2>/dev/null | tail -1))"; ADVISED=nodiscard; CMP=eq
  opts=$(findmnt -n -o OPTIONS --target "$dir" 2>/dev/null)
  if [[ -z $opts ]]; then CURRENT=unavailable
  elif [[ ,$opts, == *,discard,* ]]; then CURRENT=discard
  else CURRENT=nodiscard
  fi
  APPLY="mount -o remount,nodiscard $(df --output=target "$dir" 2>/dev/null | tail -1) && systemctl enable --now fstrim.timer"
}
s_nofile() {
  NAME="open files limit (ulimit -n)"; ADVISED=65536; CMP=ge; CURRENT=$(ulimit -n)
  APPLY="echo 'raise nofile to 65536: LimitNOFILE=65536 in the service unit or /etc/security/limits.conf'"
}
s_memlock() {
  NAME="locked memory KiB (ulimit -l)"; ADVISED=unlimited; CMP=ge; CURRENT=$(ulimit -l)
  APPLY="echo 'raise memlock: LimitMEMLOCK=infinity in the service unit or /etc/security/limits.conf'"
}
s_irqbalance() {
  NAME="irqbalance service"; ADVISED=inactive; CMP=eq
  CURRENT=$(systemctl is-active irqbalance 2>/dev/null); [[ $CURRENT == active ]] || CURRENT=inactive
  APPLY="systemctl disable --now irqbalance  # then pin NIC and disk IRQs off the shard cores (README)"
}

SETTINGS=(s_governor s_thp s_swappiness s_somaxconn s_syn_backlog s_rmem_max s_wmem_max s_tcp_rmem s_tcp_wmem
  s_file_max s_io_uring s_scheduler s_read_ahead s_discard s_nofile s_memlock s_irqbalance)

# 0: acceptable, 1: should change, 2: cannot tell here.
acceptable() {
  local value=$1 advised=$2 cmp=$3
  [[ $value == unavailable ]] && return 2
  case $cmp in
    eq) [[ $value == "$advised" ]] ;;
    in:*) [[ ",${cmp#in:}," == *",$value,"* ]] ;;
    ge) [[ $value == unlimited ]] || { [[ $advised != unlimited && $value =~ ^[0-9]+$ ]] && ((value >= advised)); } ;;
    le) [[ $value =~ ^[0-9]+$ ]] && ((value <= advised)) ;;
    *) return 2 ;;
  esac
}
