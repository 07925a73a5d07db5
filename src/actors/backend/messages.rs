//! Messages a backend actor answers.

use actix::Message;

use super::XenbusState;

/// The backend's and the frontend's xenbus states.
#[derive(Debug)]
pub struct DeviceStatus;

impl Message for DeviceStatus {
    type Result = (XenbusState, XenbusState);
}

/// Closes the device and removes its trees; the actor then ends normally.
#[derive(Debug)]
pub struct Unplug;

impl Message for Unplug {
    type Result = Result<(), String>;
}
