//! Medical volumes beside DICOM (NIfTI-1/2, gzipped NIfTI, NRRD and its detached
//! header): width, height and the slice count as `frame_count`, read from the header
//! only. Voxels are never read; a gzipped NIfTI is inflated only as far as its header.

mod nifti;
mod nrrd;

use asset_core::{AssetMetadata, DataType, Limits};

pub(crate) use nifti::{gzipped_nifti, nifti1, nifti2};
pub(crate) use nrrd::magic as nrrd_magic;

use crate::{Format, ProbeError, Result, Source};

/// The spatial extent a header declares: x (width), y (height) and z (slices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    width: u64,
    height: u64,
    slices: u64,
}

pub(crate) fn probe(src: &Source, format: Format, limits: &Limits) -> Result<AssetMetadata> {
    let (name, extent) = match format {
        Format::Nifti => ("NIfTI", nifti::extent(src.head())?),
        Format::NiftiGz => ("NIfTI", nifti::extent(&nifti::inflate_header(src)?)?),
        Format::Nrrd => ("NRRD", nrrd::extent(src, limits)?),
        other => return Err(ProbeError::unsupported(format!("{other:?} is not a medical volume"))),
    };
    let side = |v: u64, what: &str| {
        u32::try_from(v).map_err(|_| ProbeError::corrupt(name, format!("{what} of {v} voxels")))
    };
    let mut meta = AssetMetadata::new(DataType::MedicalVolume, format.mime(), src.size());
    meta.width = Some(side(extent.width, "width")?);
    meta.height = Some(side(extent.height, "height")?);
    meta.frame_count = Some(extent.slices);
    Ok(meta)
}
