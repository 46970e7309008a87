//! The `warm-up` export (WIT 0.1.3): called once on each instance made
//! ahead of need, before its message, so that what a first call does
//! beyond any later one is done off the message's path. For a Python
//! handler that is most of a fresh instance's cost after instantiation:
//! componentize-py sets up its export glue on the first call, and CPython's
//! first run writes to pages of its memory image, each a copy-on-write
//! fault (two thirds of a first call's time in a profile of the Python
//! endpoint). A component without the export is prepared as before.

use super::{flushing, metered, Maker, Turn, Warm};
use crate::wasm::component::WARM_UP_EXPORT;
use crate::wasm::host::MessageHandle;
use std::sync::atomic::AtomicU64;
use wasmtime::component::{Component, ComponentExportIndex, Resource};

/// A component's `warm-up.warm` function.
pub(super) struct WarmUp(ComponentExportIndex);

impl WarmUp {
    /// The export of `component`, when it has one.
    pub(super) fn of(component: &Component) -> Option<WarmUp> {
        let (interface, function) = WARM_UP_EXPORT;
        let interface = component.get_export_index(None, interface)?;
        component
            .get_export_index(Some(&interface), function)
            .map(WarmUp)
    }
}

impl Maker {
    /// Calls `warm` on `instance`, lent to what it was made with (no
    /// message), metered like any guest code (its CPU time added to
    /// `spent`, in nanoseconds) and within the handler's time limit.
    /// Nothing to do without the export.
    pub(super) async fn warm_up(
        &self,
        instance: &mut Warm,
        spent: &AtomicU64,
    ) -> wasmtime::Result<()> {
        let Some(WarmUp(index)) = &self.warm_up else {
            return Ok(());
        };
        let warm = instance
            .instance
            .get_typed_func::<(Resource<MessageHandle>,), ()>(&mut instance.store, index)?;
        let handle = instance.store.data_mut().table.push(MessageHandle)?;
        // Lent as a borrow, as `handle`'s message is (see `Handler::invoke`).
        let lent = Resource::<MessageHandle>::new_borrow(handle.rep());
        let call = metered(
            warm.call_async(&mut instance.store, (lent,)),
            Turn::ahead(&self.host.cpu, spent),
        );
        match tokio::time::timeout(self.timeout, flushing(call, &instance.output)).await {
            Ok(called) => called?,
            Err(_) => wasmtime::bail!("warm-up exceeded the time limit of {:?}", self.timeout),
        }
        instance.store.data_mut().table.delete(handle)?;
        Ok(())
    }
}
