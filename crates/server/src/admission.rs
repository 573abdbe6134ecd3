//! Who may connect: the gateway-wide and per-address connection limits.
//!
//! "Per address" is per network prefix: one host on IPv6 usually holds a whole /64, so counting
//! whole IPv6 addresses would let it open unlimited connections. Addresses are grouped by
//! [`AddressGroups`] (`limits.ipv6_prefix_len`, `limits.ipv4_prefix_len`) before they are counted.
//!
//! Shared by every reactor and touched only when a connection opens or closes, never per
//! message; the per-address map is behind a mutex for that reason.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The gateway holds `limits.max_connections` already (503).
    Full,
    /// This address holds `limits.max_connections_per_ip` already (429).
    PerAddress,
}

/// How source addresses are grouped for the per-address limit: by their first `v4` bits (IPv4)
/// or `v6` bits (IPv6). IPv4 addresses mapped into IPv6 (`::ffff:a.b.c.d`, what a dual-stack
/// listener sees) count as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressGroups {
    pub v4: u8,
    pub v6: u8,
}

impl Default for AddressGroups {
    /// Each IPv4 address on its own, IPv6 by /64.
    fn default() -> Self {
        Self { v4: 32, v6: 64 }
    }
}

impl AddressGroups {
    /// The group `ip` is counted in: the address with the bits past its prefix cleared.
    pub fn group(self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & prefix_mask_u32(self.v4))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & prefix_mask_u128(self.v6))),
        }
    }
}

fn prefix_mask_u32(len: u8) -> u32 {
    u32::MAX.checked_shl(32u32.saturating_sub(u32::from(len))).unwrap_or(0)
}

fn prefix_mask_u128(len: u8) -> u128 {
    u128::MAX.checked_shl(128u32.saturating_sub(u32::from(len))).unwrap_or(0)
}

/// Open connections, in total and per source address group.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    groups: AddressGroups,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_user: Mutex<HashMap<String, usize>>,
}

impl Admission {
    /// `max_per_ip` 0 means no per-address limit; `groups` says which addresses count as one.
    pub fn new(max_total: usize, max_per_ip: usize, groups: AddressGroups) -> Self {
        Self {
            max_total,
            max_per_ip,
            groups,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a new connection from `ip` in, unless a limit refuses it.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.admit_total()?;
        self.admit_address(ip).inspect_err(|_| self.release_total())
    }

    /// Counts a new connection in the gateway's total, whose address is not known yet (it waits
    /// for a PROXY header or a trusted proxy's forwarding headers), unless the total is reached.
    pub fn admit_total(&self) -> Result<(), Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        Ok(())
    }

    /// Counts a connection already in the total in under its address `ip`, unless the
    /// per-address limit refuses it (it is then still in the total).
    pub fn admit_address(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = per_ip.entry(self.groups.group(ip)).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(Refusal::PerAddress);
            }
            *count += 1;
        }
        Ok(())
    }

    /// Counts an admitted connection from `ip` out.
    pub fn release(&self, ip: IpAddr) {
        self.release_address(ip);
        self.release_total();
    }

    /// Counts a connection out of the total ([`Admission::admit_total`]).
    pub fn release_total(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Counts a connection out of its address ([`Admission::admit_address`]).
    pub fn release_address(&self, ip: IpAddr) {
        if self.max_per_ip > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let group = self.groups.group(ip);
            if let Some(count) = per_ip.get_mut(&group) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_ip.remove(&group);
                }
            }
        }
    }

    /// Counts an authenticated connection of `user` in, unless the user's own limit refuses it.
    pub fn admit_user(&self, user: &str, limit: Option<usize>) -> bool {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_user.entry(user.to_string()).or_insert(0);
        if limit.is_some_and(|max| *count >= max) {
            return false;
        }
        *count += 1;
        true
    }

    /// Counts an authenticated connection of `user` out.
    pub fn release_user(&self, user: &str) {
        let mut per_user = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = per_user.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                per_user.remove(user);
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_total_and_per_address() {
        let a = Admission::new(3, 2, AddressGroups::default());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(a.admit(x), Ok(()));
        assert_eq!(a.admit(x), Ok(()));
        assert_eq!(a.admit(x), Err(Refusal::PerAddress));
        assert_eq!(a.admit(y), Ok(()));
        assert_eq!(a.admit(y), Err(Refusal::Full));
        a.release(x);
        assert_eq!(a.admit(y), Ok(()));
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn a_connection_whose_address_is_not_known_yet_counts_in_the_total() {
        let a = Admission::new(2, 1, AddressGroups::default());
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(a.admit_total(), Ok(()));
        assert_eq!(a.admit_total(), Ok(()));
        assert_eq!(a.admit_total(), Err(Refusal::Full), "two waiting for their address fill the gateway");
        assert_eq!(a.admit(x), Err(Refusal::Full));
        assert_eq!(a.admit_address(x), Ok(()));
        assert_eq!(a.admit_address(x), Err(Refusal::PerAddress));
        assert_eq!(a.open(), 2, "a refused address leaves the total to its caller");
        a.release_total();
        a.release(x);
        assert_eq!(a.open(), 0);
        assert_eq!(a.admit(x), Ok(()), "the address was counted out");
    }

    #[test]
    fn ipv6_counts_by_prefix_and_ipv4_by_address() {
        let groups = AddressGroups::default();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(groups.group(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(groups.group(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), ip("2001:db8:1:2::"));
        assert_ne!(groups.group(ip("2001:db8:1:3::1")), groups.group(ip("2001:db8:1:2::1")));
        assert_eq!(groups.group(ip("10.1.2.3")), ip("10.1.2.3"));
        // What a dual-stack listener sees of an IPv4 client: grouped as IPv4, not into ::/64.
        assert_eq!(groups.group(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_ne!(groups.group(ip("::ffff:10.1.2.3")), groups.group(ip("::ffff:10.1.2.4")));
        let wide = AddressGroups { v4: 24, v6: 48 };
        assert_eq!(wide.group(ip("10.1.2.3")), ip("10.1.2.0"));
        assert_eq!(wide.group(ip("2001:db8:1:ffff::1")), ip("2001:db8:1::"));
        let extremes = |v4, v6| AddressGroups { v4, v6 };
        assert_eq!(extremes(0, 0).group(ip("10.1.2.3")), ip("0.0.0.0"));
        assert_eq!(extremes(0, 0).group(ip("2001:db8::1")), ip("::"));
        assert_eq!(extremes(32, 128).group(ip("2001:db8::1")), ip("2001:db8::1"));
    }

    #[test]
    fn one_ipv6_prefix_shares_one_allowance() {
        let a = Admission::new(100, 2, AddressGroups::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.admit(ip("2001:db8::1")), Ok(()));
        assert_eq!(a.admit(ip("2001:db8::2")), Ok(()));
        assert_eq!(a.admit(ip("2001:db8::3")), Err(Refusal::PerAddress), "the same /64");
        assert_eq!(a.admit(ip("2001:db8:0:1::1")), Ok(()), "the next /64");
        a.release(ip("2001:db8::1"));
        assert_eq!(a.admit(ip("2001:db8::ffff")), Ok(()), "released into the group");
        assert_eq!(a.open(), 3);
    }
}
