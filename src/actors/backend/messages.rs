//! Messages a backend actor answers.

use actix::Message;

use super::HotplugError;
use crate::xs::XenbusState;

/// The backend's and the frontend's xenbus states.
#[derive(Debug)]
pub struct DeviceStatus;

impl Message for DeviceStatus {
    type Result = (XenbusState, XenbusState);
}

/// Closes the device with the guest, removes its trees and releases its
/// host side (loop device, interface); the actor then ends normally.
/// Answers whether the guest closed it in time.
#[derive(Debug)]
pub struct Unplug;

impl Message for Unplug {
    type Result = Result<bool, HotplugError>;
}

/// The domain is going: removes the device's trees without waiting for the
/// guest and releases its host side; the actor then ends normally.
#[derive(Debug)]
pub struct Release;

impl Message for Release {
    type Result = Result<(), HotplugError>;
}
