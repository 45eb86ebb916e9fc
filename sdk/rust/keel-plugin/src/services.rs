//! Services between plugins (keel.services/1): typed tables, leases that release on drop.

use crate::sys::*;
use crate::{Error, Result};
use std::marker::PhantomData;
use std::mem::size_of;

/// An interface table another plugin provides or consumes (e.g. gitops.sync/1).
///
/// # Safety
/// The implementing type is `#[repr(C)]`, matches the interface's C header, and starts with `struct_size: u32`.
pub unsafe trait ServiceTable: Sync + 'static {}

/// Who serves a lease, copied out of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub version: KeelVersion,
    pub interface_id: String,
    pub provider_id: String,
    pub provider_version: String,
    pub generation: u64,
    pub table_size: u32,
}

impl ServiceInfo {
    /// # Safety
    /// `raw`'s strings must be valid for the call.
    pub(crate) unsafe fn from_raw(raw: &KeelServiceInfo) -> ServiceInfo {
        ServiceInfo {
            version: raw.version,
            interface_id: raw.interface_id.as_str().to_string(),
            provider_id: raw.provider_id.as_str().to_string(),
            provider_version: raw.provider_version.as_str().to_string(),
            generation: raw.generation,
            table_size: raw.table_size,
        }
    }
}

/// A held lease on a provider's table: derefs to the table, released when dropped. While it is held the provider
/// stays active, so hold it for one unit of work (a request, a job).
pub struct Lease<T: ServiceTable> {
    services: &'static KeelHostServices,
    lease: *mut KeelServiceLease,
    table: *const T,
    _t: PhantomData<T>,
}

// Safe: release and describe are [thread-safe] (services.h) and the table is Sync.
unsafe impl<T: ServiceTable> Send for Lease<T> {}
unsafe impl<T: ServiceTable> Sync for Lease<T> {}

impl<T: ServiceTable> Lease<T> {
    /// # Safety
    /// `lease` and `table` come from a successful acquire with min_size >= size_of::<T>().
    pub(crate) unsafe fn new(services: &'static KeelHostServices, lease: *mut KeelServiceLease, table: *const T) -> Lease<T> {
        Lease { services, lease, table, _t: PhantomData }
    }

    /// Who serves this lease.
    pub fn info(&self) -> Result<ServiceInfo> {
        let describe = self.services.describe.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.services/1 has no describe"))?;
        let mut raw = KeelServiceInfo {
            struct_size: size_of::<KeelServiceInfo>() as u32,
            version: KeelVersion { major: 0, minor: 0, patch: 0 },
            interface_id: KeelStr::EMPTY,
            provider_id: KeelStr::EMPTY,
            provider_version: KeelStr::EMPTY,
            generation: 0,
            table_size: 0,
        };
        Error::check(unsafe { describe(self.lease, &mut raw) }, "describing a lease")?;
        Ok(unsafe { ServiceInfo::from_raw(&raw) })
    }
}

impl<T: ServiceTable> std::ops::Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        unsafe { &*self.table }
    }
}

impl<T: ServiceTable> Drop for Lease<T> {
    fn drop(&mut self) {
        if let Some(release) = self.services.release {
            unsafe { release(self.lease) }
        }
    }
}
