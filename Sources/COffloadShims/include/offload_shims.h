#ifndef OFFLOAD_SHIMS_H
#define OFFLOAD_SHIMS_H

/// What Swift cannot import from the Linux headers: the TUNSET* ioctl request numbers are _IOW()
/// macros, and struct ifreq is a union. Each function does one system call and returns its
/// result, or -errno on failure. Nothing else lives here.

/// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h).
enum {
    OFFLOAD_TUN_F_CSUM = 0x01,
    OFFLOAD_TUN_F_TSO4 = 0x02,
    OFFLOAD_TUN_F_TSO6 = 0x04,
    OFFLOAD_TUN_F_TSO_ECN = 0x08,
    OFFLOAD_TUN_F_UFO = 0x10,
    OFFLOAD_TUN_F_USO4 = 0x20,
    OFFLOAD_TUN_F_USO6 = 0x40,
};

/// Opens /dev/net/tun and attaches to (or creates) the TUN device `name` with IFF_TUN | IFF_NO_PI,
/// plus IFF_VNET_HDR when `vnet_hdr` and IFF_MULTI_QUEUE when `multi_queue`. The device's actual
/// name is copied to `actual_name` (16 bytes). Returns the descriptor (non-blocking, close-on-exec)
/// or -errno.
int offload_tun_open(const char *name, int vnet_hdr, int multi_queue, char *actual_name);

/// As offload_tun_open, with IFF_TAP instead of IFF_TUN when `tap`: the device carries Ethernet frames.
int offload_tun_open_mode(const char *name, int vnet_hdr, int multi_queue, int tap, char *actual_name);

/// TUNSETOFFLOAD. Returns 0 or -errno (EINVAL for a flag the kernel does not know).
int offload_tun_set_offload(int fd, unsigned int flags);

/// TUNSETVNETHDRSZ. Returns 0 or -errno.
int offload_tun_set_vnet_hdr_size(int fd, int size);

/// The MTU of interface `name` (SIOCGIFMTU), or -errno.
int offload_interface_mtu(const char *name);

/// Sets the MTU of interface `name` (SIOCSIFMTU) and brings it up (SIOCSIFFLAGS). Returns 0 or -errno.
int offload_interface_up(const char *name, int mtu);

/// Generic receive offload of interface `name` (SIOCETHTOOL): with `set` < 0 reads it (1 on, 0 off),
/// else turns it on (1) or off (0) and returns 0. Returns -errno on failure (EOPNOTSUPP: the driver
/// has no GRO switch).
int offload_interface_gro(const char *name, int set);

/// Sets the transmit queue length of interface `name` (SIOCSIFTXQLEN). For a TUN device this is
/// the ring the kernel fills and the reader drains. Returns 0 or -errno.
int offload_interface_set_txqueuelen(const char *name, int length);

/// Opens a UDP socket of `family` (AF_INET or AF_INET6), non-blocking and close-on-exec, bound to
/// `local`, and connected to `remote` when `connected` (both sockaddr_in/sockaddr_in6 of `length`
/// bytes; a connected socket only receives from that address and port), with UDP_GRO on when
/// `gro` (the kernel then hands over trains of same-size datagrams in one read) and path MTU
/// discovery on (IP_PMTUDISC_DO: DF set, never fragmented locally). Returns the descriptor or -errno.
int offload_udp_open(int family, const void *local, const void *remote, unsigned int length, int gro, int connected);

/// One sendmsg of `count` iovecs, to `remote` (`remote_length` bytes; NULL on a connected socket);
/// with `segment_size` > 0, a UDP_SEGMENT control message asks the kernel to cut the payload into
/// datagrams of that size (UDP GSO). Returns the bytes sent or -errno.
long offload_udp_send(int fd, const void *iovecs, int count, int segment_size, const void *remote,
                      unsigned int remote_length);

/// As offload_udp_send, and with `tos` >= 0 an IP_TOS (IPV6_TCLASS when `ipv6`) control message:
/// this datagram's TOS / traffic class, leaving the socket's own setting alone.
long offload_udp_send_tos(int fd, const void *iovecs, int count, int segment_size, const void *remote,
                          unsigned int remote_length, int tos, int ipv6);

/// One recvmsg into `buffer`; `*segment_size` receives the UDP_GRO size (the datagrams' size when
/// the kernel coalesced several, else 0), and `*from_remote` whether the sender's address equals
/// `remote`'s (any port), and `*tos` the outer TOS / traffic class (IP_RECVTOS, IPV6_RECVTCLASS;
/// -1 when the kernel did not say). Returns the bytes received or -errno.
long offload_udp_receive(int fd, void *buffer, unsigned long capacity, int *segment_size, const void *remote,
                         int *from_remote, int *tos);

/// As offload_udp_receive, and the sender: `source` (16 bytes) receives its address (IPv4 in the
/// first 4 bytes) and `*source_port` its port, `*source_family` AF_INET or AF_INET6 (0: unknown).
long offload_udp_receive_from(int fd, void *buffer, unsigned long capacity, int *segment_size, const void *remote,
                              int *from_remote, int *tos, unsigned char *source, unsigned short *source_port,
                              int *source_family);

/// The path MTU towards `remote` (IP_MTU / IPV6_MTU of a socket connected to it for the
/// question), or -errno.
int offload_udp_path_mtu(int family, const void *remote, unsigned int length);

#endif
