//! What the services with a list of named converter channels (`ain`'s ADC
//! inputs, `dac`'s outputs) check alike: how many, each name a topic level
//! that none of the service's own topics use, each converter channel a
//! number the kernel's IIO files can have, no name twice.

use rollcall_proto::ProtoError;
use rollcall_proto::topic::check_name;

/// The most channels a service takes: more than any ADC or DAC has, and few
/// enough that the description stays well inside a message (`MAX_PAYLOAD`).
pub const MAX_CHANNELS: usize = 64;
/// Names that would land on a topic the service already uses, or (as
/// `get/config`) be read as something else.
pub(crate) const RESERVED: [&str; 7] =
    ["get", "set", "control", "setup", "error", "reply", "config"];
/// The highest converter channel number (`in_voltage{N}_raw`).
const MAX_CHANNEL_NUMBER: u32 = 255;

/// What is wrong with a list of channels; each message starts with the key.
#[derive(Debug, thiserror::Error)]
pub enum ChannelListError {
    /// An empty list of channels.
    #[error("channels: at least one channel")]
    Empty,
    /// More channels than [`MAX_CHANNELS`].
    #[error("channels: at most {MAX_CHANNELS}")]
    TooMany,
    /// A channel name that cannot be a topic level.
    #[error("channels[{index}].name: {source}")]
    Name {
        /// The channel's place in `channels`.
        index: usize,
        /// What the topic grammar says of it.
        #[source]
        source: ProtoError,
    },
    /// A channel name the service's own topics use.
    #[error("channels[{index}].name: `{name}` is reserved")]
    Reserved {
        /// The channel's place in `channels`.
        index: usize,
        /// The name.
        name: String,
    },
    /// A converter channel number above 255.
    #[error("channels[{index}].channel: {channel} is not a channel")]
    NotAChannel {
        /// The channel's place in `channels`.
        index: usize,
        /// The number.
        channel: u32,
    },
    /// Two channels of one name.
    #[error("channels[{index}].name: `{name}` is used twice")]
    NameUsedTwice {
        /// The later channel's place in `channels`.
        index: usize,
        /// The name.
        name: String,
    },
}

/// Checks a list of channels, each `(name, converter channel)`, in order:
/// the first fault found is the one reported.
pub(crate) fn check_channels(channels: &[(&str, u32)]) -> Result<(), ChannelListError> {
    if channels.is_empty() {
        return Err(ChannelListError::Empty);
    }
    if channels.len() > MAX_CHANNELS {
        return Err(ChannelListError::TooMany);
    }
    for (index, &(name, channel)) in channels.iter().enumerate() {
        check_name(name).map_err(|source| ChannelListError::Name { index, source })?;
        if RESERVED.contains(&name) {
            return Err(ChannelListError::Reserved {
                index,
                name: name.to_owned(),
            });
        }
        if channel > MAX_CHANNEL_NUMBER {
            return Err(ChannelListError::NotAChannel { index, channel });
        }
        if channels[..index].iter().any(|&(other, _)| other == name) {
            return Err(ChannelListError::NameUsedTwice {
                index,
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fault_is_named_with_its_channel() {
        let too_many: Vec<(&str, u32)> = (0..=MAX_CHANNELS as u32).map(|n| ("c", n)).collect();
        for (channels, message) in [
            (vec![], "channels: at least one channel"),
            (too_many, "channels: at most 64"),
            (vec![("a", 0), ("a/b", 1)], "channels[1].name: "),
            (
                vec![("control", 0)],
                "channels[0].name: `control` is reserved",
            ),
            (
                vec![("a", 256)],
                "channels[0].channel: 256 is not a channel",
            ),
            (
                vec![("a", 0), ("a", 1)],
                "channels[1].name: `a` is used twice",
            ),
        ] {
            let err = check_channels(&channels).unwrap_err().to_string();
            assert!(err.starts_with(message), "{channels:?}: {err}");
        }
        assert!(check_channels(&[("a", 0), ("b", 255)]).is_ok());
    }
}
