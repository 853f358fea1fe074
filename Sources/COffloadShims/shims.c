#include "offload_shims.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/uio.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

int offload_tun_open(const char *name, int vnet_hdr, int multi_queue, char *actual_name) {
    return offload_tun_open_mode(name, vnet_hdr, multi_queue, 0, actual_name);
}

int offload_tun_open_mode(const char *name, int vnet_hdr, int multi_queue, int tap, char *actual_name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = (tap ? IFF_TAP : IFF_TUN) | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0) | (multi_queue ? IFF_MULTI_QUEUE : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
    actual_name[IFNAMSIZ - 1] = 0;
    return fd;
}

int offload_tun_set_offload(int fd, unsigned int flags) {
    return ioctl(fd, TUNSETOFFLOAD, flags) < 0 ? -errno : 0;
}

int offload_tun_set_vnet_hdr_size(int fd, int size) {
    return ioctl(fd, TUNSETVNETHDRSZ, &size) < 0 ? -errno : 0;
}

static int with_ifreq(const char *name, unsigned long request, struct ifreq *ifr) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -errno;
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int r = ioctl(s, request, ifr) < 0 ? -errno : 0;
    close(s);
    return r;
}

int offload_interface_mtu(const char *name) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int r = with_ifreq(name, SIOCGIFMTU, &ifr);
    return r < 0 ? r : ifr.ifr_mtu;
}

int offload_interface_gro(const char *name, int set) {
    struct ifreq ifr;
    struct ethtool_value value;
    memset(&ifr, 0, sizeof ifr);
    memset(&value, 0, sizeof value);
    value.cmd = set < 0 ? ETHTOOL_GGRO : ETHTOOL_SGRO;
    value.data = set > 0 ? 1 : 0;
    ifr.ifr_data = (char *)&value;
    int r = with_ifreq(name, SIOCETHTOOL, &ifr);
    return r < 0 ? r : (set < 0 ? (int)value.data : 0);
}

int offload_interface_up(const char *name, int mtu) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    if (mtu > 0) {
        ifr.ifr_mtu = mtu;
        int r = with_ifreq(name, SIOCSIFMTU, &ifr);
        if (r < 0) return r;
    }
    memset(&ifr, 0, sizeof ifr);
    int r = with_ifreq(name, SIOCGIFFLAGS, &ifr);
    if (r < 0) return r;
    ifr.ifr_flags |= IFF_UP;
    return with_ifreq(name, SIOCSIFFLAGS, &ifr);
}

int offload_interface_set_txqueuelen(const char *name, int length) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_qlen = length;
    return with_ifreq(name, SIOCSIFTXQLEN, &ifr);
}

int offload_udp_open(int family, const void *local, const void *remote, unsigned int length, int gro, int connected) {
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int buffer = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    int pmtu = IP_PMTUDISC_DO;
    if (family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &pmtu, sizeof pmtu);
        setsockopt(fd, IPPROTO_IPV6, IPV6_RECVTCLASS, &one, sizeof one);
    } else {
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, sizeof pmtu);
        setsockopt(fd, IPPROTO_IP, IP_RECVTOS, &one, sizeof one);
    }
    if (bind(fd, (const struct sockaddr *)local, length) < 0
        || (connected && connect(fd, (const struct sockaddr *)remote, length) < 0)) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (gro && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

long offload_udp_send(int fd, const void *iovecs, int count, int segment_size, const void *remote,
                      unsigned int remote_length) {
    return offload_udp_send_tos(fd, iovecs, count, segment_size, remote, remote_length, -1, 0);
}

long offload_udp_send_tos(int fd, const void *iovecs, int count, int segment_size, const void *remote,
                          unsigned int remote_length, int tos, int ipv6) {
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_name = (void *)remote;
    message.msg_namelen = remote ? remote_length : 0;
    message.msg_iov = (struct iovec *)iovecs;
    message.msg_iovlen = count;
    char control[CMSG_SPACE(sizeof(uint16_t)) + CMSG_SPACE(sizeof(int))];
    size_t used = 0;
    memset(control, 0, sizeof control);
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    if (segment_size > 0) {
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t size = (uint16_t)segment_size;
        memcpy(CMSG_DATA(c), &size, sizeof size);
        used += CMSG_SPACE(sizeof(uint16_t));
        c = CMSG_NXTHDR(&message, c);
    }
    if (tos >= 0 && c) {
        c->cmsg_level = ipv6 ? IPPROTO_IPV6 : IPPROTO_IP;
        c->cmsg_type = ipv6 ? IPV6_TCLASS : IP_TOS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &tos, sizeof tos);
        used += CMSG_SPACE(sizeof(int));
    }
    message.msg_controllen = used;
    if (used == 0) message.msg_control = NULL;
    long sent = sendmsg(fd, &message, 0);
    return sent < 0 ? -errno : sent;
}

long offload_udp_receive(int fd, void *buffer, unsigned long capacity, int *segment_size, const void *remote,
                         int *from_remote, int *tos) {
    unsigned char source[16];
    unsigned short port;
    int family;
    return offload_udp_receive_from(fd, buffer, capacity, segment_size, remote, from_remote, tos, source, &port, &family);
}

long offload_udp_receive_from(int fd, void *buffer, unsigned long capacity, int *segment_size, const void *remote,
                              int *from_remote, int *tos, unsigned char *source, unsigned short *source_port,
                              int *source_family) {
    struct iovec iov = {buffer, capacity};
    struct sockaddr_storage from;
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_name = &from;
    message.msg_namelen = sizeof from;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int)) * 3];
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    long received = recvmsg(fd, &message, 0);
    if (received < 0) return -errno;
    *segment_size = 0;
    *tos = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            *segment_size = size;
        } else if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_TOS) {
            unsigned char value;
            memcpy(&value, CMSG_DATA(c), 1);
            *tos = value;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_TCLASS) {
            int value;
            memcpy(&value, CMSG_DATA(c), sizeof value);
            *tos = value & 0xFF;
        }
    }
    *source_family = 0;
    *source_port = 0;
    if (from.ss_family == AF_INET) {
        const struct sockaddr_in *f = (const struct sockaddr_in *)&from;
        memcpy(source, &f->sin_addr, 4);
        *source_port = ntohs(f->sin_port);
        *source_family = AF_INET;
    } else if (from.ss_family == AF_INET6) {
        const struct sockaddr_in6 *f = (const struct sockaddr_in6 *)&from;
        memcpy(source, &f->sin6_addr, 16);
        *source_port = ntohs(f->sin6_port);
        *source_family = AF_INET6;
    }
    const struct sockaddr *expected = (const struct sockaddr *)remote;
    if (from.ss_family == AF_INET && expected->sa_family == AF_INET) {
        *from_remote = ((struct sockaddr_in *)&from)->sin_addr.s_addr == ((const struct sockaddr_in *)remote)->sin_addr.s_addr;
    } else if (from.ss_family == AF_INET6 && expected->sa_family == AF_INET6) {
        *from_remote = memcmp(&((struct sockaddr_in6 *)&from)->sin6_addr, &((const struct sockaddr_in6 *)remote)->sin6_addr,
                              sizeof(struct in6_addr)) == 0;
    } else {
        *from_remote = 0;
    }
    return received;
}

int offload_udp_path_mtu(int family, const void *remote, unsigned int length) {
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int mtu = 0;
    socklen_t size = sizeof mtu;
    int r = connect(fd, (const struct sockaddr *)remote, length);
    if (r == 0) {
        r = family == AF_INET6 ? getsockopt(fd, IPPROTO_IPV6, IPV6_MTU, &mtu, &size)
                               : getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &size);
    }
    int e = errno;
    close(fd);
    return r < 0 ? -e : mtu;
}
